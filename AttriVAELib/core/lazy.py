"""Lazy re-exports for package ``__init__`` modules (PEP 562).

``import AttriVAELib`` must work before torch is installed (3D Slicer discovers the module
first and installs torch on demand), and a subpackage's public names should not drag in every
heavy module beside them. A package lists ``name → module`` and gets a module-level
``__getattr__`` that imports the module on first use and caches the value::

    __getattr__, __dir__ = lazy_exports(globals(), {"AttriVAEModel": "AttriVAELib.inference.model"})
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose ``globals()`` is ``namespace``.

    Args:
        namespace: the package's ``globals()``; resolved names are cached there.
        exports: public name → dotted module that defines it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
