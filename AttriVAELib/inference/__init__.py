"""A trained model ready to use on images: encode, decode, traverse, map back to the input grid.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "AttriVAEModel": "AttriVAELib.inference.model",
    "Encoding": "AttriVAELib.inference.encoding",
    "ImageLike": "AttriVAELib.inference.encoding",
    "Dim": "AttriVAELib.inference.encoding",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
