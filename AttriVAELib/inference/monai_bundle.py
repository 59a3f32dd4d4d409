"""Export a trained Attri-VAE as a MONAI bundle (https://docs.monai.io/en/stable/mb_specification.html).

:func:`export_monai_bundle` writes, atomically (complete or not at all)::

    OUT/
      configs/metadata.json   versions, task, authors, network_data_format, the attributes
      configs/inference.json  network + preprocessing + datalist + evaluator for ConfigParser
      models/model.pt         the network's state dict (torch.save of tensors only)
      models/model.safetensors, models/model.json   the same weights as an AttriVAE checkpoint
      docs/README.md, docs/license.txt

The network input is the preprocessed model cube, ``(B, C, N, N, N)`` float32 in [0, 1]; its
outputs are μ ``(B, L)`` (``latent``), log σ² ``(B, L)`` (``logvar``) and, with a classifier,
the class probabilities ``(B, C)`` of μ (``probabilities``). The components the configs name
live in :mod:`AttriVAELib.inference.bundle_components`, so the bundle needs ``attrivae``
installed; nothing in it is downloaded and its weights load with ``weights_only=True``.

``monai.bundle.verify_metadata`` downloads its JSON schema (and needs ``jsonschema``), so it
cannot run offline; :func:`check_bundle_metadata` checks the keys the specification requires.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from AttriVAELib import __version__
from AttriVAELib.core import atomic
from AttriVAELib.core.errors import OutputError
from AttriVAELib.inference.bundle_readme import bundle_readme
from AttriVAELib.inference.model import AttriVAEModel
from AttriVAELib.nn.checkpoint import file_sha256, save_checkpoint

__all__ = ["BUNDLE_COMPONENTS", "METADATA_SCHEMA", "REQUIRED_METADATA_KEYS", "REQUIRED_TENSOR_KEYS",
           "check_bundle_metadata", "export_monai_bundle", "is_attrivae_bundle"]

#: The module whose components ``configs/inference.json`` instantiates.
BUNDLE_COMPONENTS = "AttriVAELib.inference.bundle_components"
#: The JSON schema MONAI's ``verify_metadata`` would download (recorded, not fetched).
METADATA_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                   "meta_schema_20240725.json")
#: Keys the MONAI bundle specification makes mandatory in ``metadata.json``. The package
#: versions are ``required_packages_version`` (MONAI ≥ 1.4 reads ``optional_packages_version`` as
#: a deprecated alias of it).
REQUIRED_METADATA_KEYS = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                          "required_packages_version", "task", "description", "authors", "copyright",
                          "network_data_format")
#: Keys every input and output tensor format specifier must have.
REQUIRED_TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                        "is_patch_data", "channel_def")
#: ``metadata.json``'s own section; its presence marks a bundle this exporter wrote.
_SECTION = "attrivae"




def _installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _tensor(type_: str, format_: str, channels: int, shape: list, value_range: list, channel_def: dict[str, str],
            modality: str = "n/a") -> dict[str, Any]:
    return {"type": type_, "format": format_, "modality": modality, "num_channels": int(channels),
            "spatial_shape": shape, "dtype": "float32", "value_range": value_range, "is_patch_data": False,
            "channel_def": channel_def}


def _latent_channels(model: AttriVAEModel) -> dict[str, str]:
    names, units = model.attribute_names, model.attribute_units
    out = {}
    for k in range(model.latent_size):
        if k < len(names):
            unit = f" ({units[k]})" if units[k] else ""
            out[str(k)] = f"{names[k]}{unit}: regularized, trained to increase with the attribute"
        else:
            out[str(k)] = "free (not tied to an attribute)"
    return out


def _label_channels(model: AttriVAEModel) -> dict[str, str]:
    labels = model.label_names
    return {str(c): f"probability of class {labels[c] if c < len(labels) else c}" for c in range(model.num_classes)}


def _data_description(model: AttriVAEModel) -> str:
    data = model.meta.get("data") or {}
    text = data.get("description") if isinstance(data, Mapping) else None
    return str(text) if text else "not recorded in the checkpoint"


def _metadata(model: AttriVAEModel, *, name: str, version: str, authors: str, copyright: str, license: str,
              modality: str) -> dict[str, Any]:
    import monai
    import numpy

    n, c, L = model.input_size, model.config.in_channels, model.latent_size
    names = ", ".join(f"{a} ({u})" if u else a for a, u in zip(model.attribute_names, model.attribute_units))
    head = ""
    if model.has_classifier:
        head = f" and the probabilities of its {model.num_classes} classes"
    task = "Attribute-regularized latent encoding" + (" and classification" if model.has_classifier else "") + \
        " of 3D images (Attri-VAE)"
    description = (
        f"Attri-VAE: a 3D convolutional variational autoencoder whose first {model.num_regularized} latent "
        f"dimensions are each tied to one attribute ({names or 'none'}). The network takes one {n}x{n}x{n} cube "
        "with intensities in [0, 1], made from any 3D image by the AttriVAE preprocessing (isotropic resampling "
        "in physical space, intensity window or percentiles; configs/inference.json applies it), and returns "
        f"the posterior mean of its {L} latent dimensions{head}. Training data: {_data_description(model)}.")
    packages = {"attrivae": __version__}
    for package in ("SimpleITK", "safetensors", "nibabel"):
        found = _installed(package)
        if found:
            packages[package] = found
    outputs = {
        "latent": _tensor("tuples", "latent", L, [], [], _latent_channels(model)),
        "logvar": _tensor("tuples", "latent", L, [], [], {str(k): f"log-variance of latent dimension {k}"
                                                           for k in range(L)}),
    }
    if model.has_classifier:
        outputs["probabilities"] = _tensor("probabilities", "classes", model.num_classes, [], [0, 1],
                                           _label_channels(model))
    return {
        "schema": METADATA_SCHEMA,
        "version": version,
        "changelog": {version: f"exported by attrivae {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": packages,
        "name": name,
        "task": task,
        "description": description,
        "authors": authors,
        "copyright": copyright,
        "license": license,
        "intended_use": "Research on interpretable representations; not for diagnostic use.",
        "data_source": _data_description(model),
        "references": ["Cetin et al., 'Attri-VAE: Attribute-based interpretable representations of medical images "
                       "with variational autoencoders', Computerized Medical Imaging and Graphics, 2023."],
        "network_data_format": {
            "inputs": {"image": _tensor("image", "magnitude", c, [n, n, n], [0, 1],
                                        {str(i): "image" if c == 1 else f"image channel {i}" for i in range(c)},
                                        modality)},
            "outputs": outputs,
        },
        _SECTION: {
            "exported_by": f"attrivae {__version__}",
            "model_config": model.config.to_dict(),
            "preprocess": model.spec.to_dict(),
            "attributes": [{"dim": k, "name": a, "unit": u}
                           for k, (a, u) in enumerate(zip(model.attribute_names, model.attribute_units))],
            "labels": model.label_names if model.has_classifier else [],
        },
    }


def _inference_config(model: AttriVAEModel) -> dict[str, Any]:
    """``configs/inference.json``: only numbers, booleans and fixed strings (no user text is parsed)."""
    preprocess: dict[str, Any] = {"_target_": f"{BUNDLE_COMPONENTS}.AttriVAEPreprocessd", "keys": "image",
                                  "preprocess": model.spec.to_dict()}
    if model.spec.needs_mask:
        preprocess["mask_key"] = "mask"
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/images'",
        "mask_dir": "$@bundle_root + '/masks'" if model.spec.needs_mask else None,
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "meta_path": "$@bundle_root + '/configs/metadata.json'",
        "network_def": {"_target_": f"{BUNDLE_COMPONENTS}.AttriVAEBundleNet", "model_config": model.config.to_dict(),
                        "output": "latent"},
        "network": {"_target_": f"{BUNDLE_COMPONENTS}.load_weights", "network": "@network_def",
                    "path": "@ckpt_path", "device": "@device"},
        "preprocessing": {"_target_": "Compose", "transforms": [preprocess]},
        "datalist": {"_target_": f"{BUNDLE_COMPONENTS}.list_images", "folder": "@dataset_dir",
                     "mask_folder": "@mask_dir"},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "evaluator": {"_target_": f"{BUNDLE_COMPONENTS}.LatentEncoder", "network": "@network",
                      "dataloader": "@dataloader", "output_file": "$@output_dir + '/latents.json'",
                      "device": "@device", "meta_file": "@meta_path"},
        "run": ["$@evaluator.run()"],
    }


def check_bundle_metadata(meta: Mapping[str, Any]) -> list[str]:
    """What ``metadata.json`` lacks against the bundle specification's required keys (empty: nothing).

    Checks the mandatory top-level keys (``optional_packages_version`` is accepted for
    ``required_packages_version``) and, for every input and output of ``network_data_format``,
    the tensor format keys, ``num_channels`` (a positive integer), ``spatial_shape`` and
    ``value_range`` (lists) and ``channel_def`` (a mapping).
    """
    problems = []
    for key in REQUIRED_METADATA_KEYS:
        if key == "required_packages_version" and "optional_packages_version" in meta:
            continue
        if key not in meta:
            problems.append(f"missing {key}")
    fmt = meta.get("network_data_format")
    if not isinstance(fmt, Mapping):
        return problems + ([] if "network_data_format" not in meta else ["network_data_format is not a mapping"])
    for side in ("inputs", "outputs"):
        tensors = fmt.get(side)
        if not isinstance(tensors, Mapping) or not tensors:
            problems.append(f"network_data_format has no {side}")
            continue
        for name, spec in tensors.items():
            where = f"network_data_format.{side}.{name}"
            if not isinstance(spec, Mapping):
                problems.append(f"{where} is not a mapping")
                continue
            problems += [f"{where} has no {key}" for key in REQUIRED_TENSOR_KEYS if key not in spec]
            channels = spec.get("num_channels")
            if "num_channels" in spec and (isinstance(channels, bool) or not isinstance(channels, int)
                                           or channels < 1):
                problems.append(f"{where}.num_channels must be a positive integer, got {channels!r}")
            for key, kind in (("spatial_shape", list), ("value_range", list), ("channel_def", Mapping)):
                if key in spec and not isinstance(spec[key], kind):
                    problems.append(f"{where}.{key} must be a {'list' if kind is list else 'mapping'}")
    return problems


def is_attrivae_bundle(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a bundle this exporter wrote (its metadata has the ``attrivae`` section)."""
    meta = Path(folder) / "configs" / "metadata.json"
    try:
        return isinstance(json.loads(meta.read_text(encoding="utf-8")).get(_SECTION), Mapping)
    except (OSError, ValueError, AttributeError):
        return False


def _weights(model: AttriVAEModel, models: Path) -> dict[str, str]:
    """Write ``model.pt`` and the checkpoint pair into ``models``; returns file name → SHA-256."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.network.state_dict().items()}
    torch.save(state, models / "model.pt")
    reread = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    if reread.keys() != state.keys() or not all(torch.equal(reread[k], state[k]) for k in state):
        raise OutputError(f"{models / 'model.pt'}: the weights read back differ from those written")
    meta = dict(model.meta)
    meta["data"] = {"description": _data_description(model)}  # no paths of the training machine
    meta.update(model_config=model.config.to_dict(), preprocess=model.spec.to_dict())
    save_checkpoint(models, {f"model.{k}": v for k, v in state.items()}, meta, name="model")
    return {name: file_sha256(models / name) for name in ("model.pt", "model.safetensors")}


def export_monai_bundle(model: AttriVAEModel | str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                        name: str | None = None, version: str = "0.1.0",
                        authors: str = "not recorded in the checkpoint",
                        copyright: str = "not recorded in the checkpoint", license: str = "not stated",
                        modality: str = "n/a") -> Path:
    """Write ``model`` (an :class:`AttriVAEModel`, a run folder or a ``model.safetensors``) as a MONAI bundle.

    Args:
        model: the model; a path is loaded on the CPU with its checksum verified.
        out: the bundle folder (its name is the bundle's name unless ``name`` is given).
        overwrite: replace an existing ``out`` if this exporter wrote it.
        name, version, authors, copyright, license: recorded in ``metadata.json`` and the README.
        modality: the input's modality (``"MR"``, ``"CT"``, …; ``"n/a"`` if none).

    Returns:
        ``out``.

    Raises:
        CheckpointError: the model cannot be loaded.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        OutputError: ``out`` exists but is not a bundle written by this exporter.
    """
    out = Path(out)
    if not isinstance(model, AttriVAEModel):
        model = AttriVAEModel.load(model, device="cpu", fast_decode=False)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(None, None, str(out))
        if out.is_symlink() or not out.is_dir() or not is_attrivae_bundle(out):
            raise OutputError(f"{out}: not a MONAI bundle written by attrivae export; --overwrite replaces only "
                              "what the exporter wrote")
    name = name or out.resolve().name
    meta = _metadata(model, name=name, version=version, authors=authors, copyright=copyright, license=license,
                     modality=modality)
    problems = check_bundle_metadata(meta)
    if problems:  # a bug of this module, not of the user's input
        raise RuntimeError(f"bundle metadata is incomplete: {'; '.join(problems)}")
    with atomic.atomic_dir(out, overwrite=overwrite) as tmp:
        for folder in ("configs", "models", "docs"):
            (tmp / folder).mkdir()
        meta[_SECTION]["weights"] = _weights(model, tmp / "models")
        atomic.write_json(tmp / "configs" / "metadata.json", meta)
        atomic.write_json(tmp / "configs" / "inference.json", _inference_config(model))
        atomic.write_text(tmp / "docs" / "README.md", bundle_readme(model, meta))
        atomic.write_text(tmp / "docs" / "license.txt", f"{license}\n\nCopyright: {copyright}\n")
    return out
