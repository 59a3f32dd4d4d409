"""Checkpoints as safetensors weights plus JSON metadata. Loading never unpickles.

A checkpoint ``NAME`` in a run folder is two files:

* ``NAME.safetensors``: tensors; its header also carries the metadata JSON, so the one file
  is self-describing and is replaced atomically;
* ``NAME.json``: the same metadata for people and tools, plus the SHA-256 of the tensor
  file. Loading checks that hash, so an edited or truncated weights file is refused.

The resumable training state (``last``) stores the optimizer's tensors under ``optim.*``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from AttriVAELib import __version__
from AttriVAELib.core import atomic
from AttriVAELib.core.errors import CheckpointError

FORMAT = "attrivae-checkpoint"
FORMAT_VERSION = 1
META_KEY = "attrivae"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"attrivae": __version__, "torch": torch.__version__, "monai": installed("monai"),
            "numpy": installed("numpy"), "python": platform.python_version()}


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_paths(location: str | os.PathLike, name: str = "model") -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder + name, or for a path to either file."""
    location = Path(location)
    if location.suffix in (".safetensors", ".json"):
        stem = location.with_suffix("")
    else:
        stem = location / name
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(location: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any],
                    name: str = "model") -> Path:
    """Write ``tensors`` and ``metadata`` atomically; returns the weights path."""
    from safetensors.torch import save_file

    weights, sidecar = checkpoint_paths(location, name)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    if "versions" not in meta:
        meta["versions"] = versions()
    text = json.dumps(meta, sort_keys=False)
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic.atomic_path(weights) as tmp:
        try:
            save_file(plain, str(tmp), metadata={META_KEY: text})
        except Exception as exc:  # safetensors reports I/O faults as its own error type
            match = re.search(r"os error (\d+)", str(exc))
            if match is None:
                raise
            code = int(match.group(1))
            raise OSError(code, os.strerror(code), str(weights)) from None
        digest = file_sha256(tmp)
    atomic.write_json(sidecar, {**meta, "weights_file": weights.name, "sha256": digest})
    return weights


def read_metadata(location: str | os.PathLike, name: str = "model") -> dict:
    """Metadata of a checkpoint without loading its tensors (from the weights header)."""
    from safetensors import safe_open

    weights, _ = checkpoint_paths(location, name)
    if not weights.exists():
        raise CheckpointError(f"{weights}: checkpoint not found")
    try:
        with safe_open(str(weights), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as exc:  # safetensors raises several error types for corrupt headers
        raise CheckpointError(f"{weights}: not a valid safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if META_KEY not in header:
        raise CheckpointError(f"{weights}: not an AttriVAE checkpoint (no metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except ValueError:
        raise CheckpointError(f"{weights}: checkpoint metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{weights}: checkpoint metadata must be a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{weights}: not an AttriVAE checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{weights}: checkpoint format_version must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{weights}: checkpoint format {meta.get('format_version')} is newer than this "
                              f"AttriVAE ({__version__}) reads; upgrade attrivae")
    return meta


def load_checkpoint(location: str | os.PathLike, name: str = "model", verify: bool = True,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, metadata). With ``verify``, the weights must match the sidecar's SHA-256."""
    from safetensors.torch import load_file

    weights, sidecar = checkpoint_paths(location, name)
    meta = read_metadata(weights)
    if verify:
        if not sidecar.exists():
            raise CheckpointError(f"{sidecar}: checkpoint metadata file missing")
        try:
            recorded = json.loads(sidecar.read_text()).get("sha256")
        except ValueError:
            raise CheckpointError(f"{sidecar}: not valid JSON") from None
        if recorded != file_sha256(weights):
            raise CheckpointError(f"{weights}: weights do not match the checksum in {sidecar.name} "
                                  "(file modified or corrupt)")
    try:
        tensors = load_file(str(weights), device=str(device))
    except Exception as exc:
        raise CheckpointError(f"{weights}: cannot read tensors ({str(exc).splitlines()[0][:120]})") from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{weights}: {len(bad)} tensor{'s' if len(bad) > 1 else ''} hold NaN or infinite values "
                              f"(e.g. {bad[0]}); the model would give meaningless outputs")
    return tensors, meta


def split_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def optimizer_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten ``optimizer.state_dict()`` into tensors and a JSON-safe remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in split_prefix(tensors, "optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def check_state_shapes(config: Any, state: Mapping[str, torch.Tensor], weights: str | os.PathLike) -> None:
    """The network ``config`` describes, built on torch's meta device (no memory), must have the
    checkpoint's tensors' names and shapes."""
    from AttriVAELib.nn.model import AttriVAE

    with torch.device("meta"):
        probe = AttriVAE(config)
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        shaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        detail = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                  f"{shaped[0]} is {found[shaped[0]]}, the configuration needs {expected[shaped[0]]}")
        raise CheckpointError(f"{weights}: weights do not fit the model configuration ({detail})")
