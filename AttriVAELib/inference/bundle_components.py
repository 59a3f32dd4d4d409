"""What an exported MONAI bundle's ``configs/inference.json`` instantiates (``_target_``).

:mod:`AttriVAELib.inference.monai_bundle` writes the bundle; MONAI's
:class:`~monai.bundle.ConfigParser` builds these components from it:

* :class:`AttriVAEBundleNet`: the network, an :class:`~AttriVAELib.nn.model.AttriVAE` (same
  module names, so the same state dict) whose ``forward`` returns one tensor, as MONAI's
  inferers and ``verify_net_in_out`` expect: ``(B, C, N, N, N)`` in [0, 1] → the posterior
  mean μ ``(B, L)`` (``output="latent"``), the log-variance ``(B, L)`` (``"logvar"``) or the
  class probabilities ``(B, C)`` of μ (``"probabilities"``);
* :func:`load_weights`: the weights into it, from ``models/model.pt`` (``torch.load`` with
  ``weights_only=True``: no code runs) or from our ``models/model.safetensors``;
* :class:`AttriVAEPreprocessd`: a dictionary transform that reads a 3D image file and maps it
  into the model's N³ cube exactly as :meth:`AttriVAEModel.preprocess
  <AttriVAELib.inference.model.AttriVAEModel.preprocess>` does (isotropic resampling in
  physical space, intensity window or percentiles, optional mask): ``image`` becomes a
  ``(1, N, N, N)`` float32 tensor and ``image_path`` keeps the file's path;
* :func:`list_images`: the datalist (``[{"image": path}, ...]``, with masks paired by file name);
* :class:`LatentEncoder`: the bundle's ``evaluator``; ``run()`` encodes every image of a data
  loader and writes μ, log σ² and the class probabilities to one JSON file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import torch
from monai.transforms import MapTransform
from torch import Tensor

from AttriVAELib.core import atomic
from AttriVAELib.core.errors import ConfigError, InputError
from AttriVAELib.data.io import Volume, check_volume, read_image, read_mask
from AttriVAELib.data.preprocessing import PreprocessSpec, preprocess
from AttriVAELib.nn.model import AttriVAE, ModelConfig, class_probabilities

__all__ = ["AttriVAEBundleNet", "AttriVAEPreprocessd", "BUNDLE_OUTPUTS", "IMAGE_SUFFIXES", "LatentEncoder",
           "list_images", "load_weights"]

#: What :class:`AttriVAEBundleNet` can return (``output=``).
BUNDLE_OUTPUTS = ("latent", "logvar", "probabilities")
#: File names :func:`list_images` takes as images.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class AttriVAEBundleNet(AttriVAE):
    """An :class:`AttriVAE` whose forward returns one tensor (see the module docstring).

    Args:
        model_config: the :class:`~AttriVAELib.nn.config.ModelConfig` fields, as a mapping.
        output: ``"latent"`` (μ, default), ``"logvar"`` or ``"probabilities"``.
    """

    def __init__(self, model_config: Mapping[str, Any], output: str = "latent") -> None:
        super().__init__(ModelConfig.from_dict(dict(model_config)))
        if output not in BUNDLE_OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(BUNDLE_OUTPUTS)} (got {output!r})")
        if output == "probabilities" and not self.has_classifier:
            raise ConfigError("output 'probabilities' needs a classifier; this model has none")
        self.output = output

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """(B, C, N, N, N) → μ (B, L), log σ² (B, L) or class probabilities (B, C), per ``output``."""
        mu, logvar = self.encode(x)
        if self.output == "latent":
            return mu
        if self.output == "logvar":
            return logvar
        return class_probabilities(self.classify(mu))


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from AttriVAELib.nn.checkpoint import load_checkpoint, split_prefix

        tensors, _ = load_checkpoint(path, device="cpu")  # checks the sidecar's SHA-256
        return split_prefix(tensors, "model") or dict(tensors)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: weights file not found") from None
    except Exception as exc:  # torch reports corrupt or non-weights files with several error types
        raise InputError(f"{path}: not a weights-only state dict ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    return dict(state)


def load_weights(network: AttriVAE, path: str | os.PathLike, device: str | torch.device = "cpu") -> AttriVAE:
    """Load ``models/model.pt`` (weights only) or ``models/model.safetensors`` into ``network``;
    returns it on ``device`` in eval mode.

    Raises:
        InputError: missing or unreadable weights, or weights that do not fit the network.
    """
    path = Path(path)
    state = _read_state(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:200]
        raise InputError(f"{path}: weights do not fit the network ({detail})") from None
    return network.to(device).eval()


class AttriVAEPreprocessd(MapTransform):
    """Read a 3D image (path or :class:`~AttriVAELib.data.io.Volume`) and preprocess it into the model cube.

    Args:
        keys: the image key(s); each becomes a ``(1, N, N, N)`` float32 tensor in [0, 1], and
            ``<key>_path`` holds the file it came from ("" for a Volume).
        preprocess: the checkpoint's :class:`~AttriVAELib.data.preprocessing.PreprocessSpec` as a mapping.
        mask_key: the key of an optional mask (path or Volume); required when the spec crops to
            the mask or applies it.
        allow_missing_keys: skip absent keys instead of failing.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable] = "image", preprocess: Mapping[str, Any] | None = None,
                 mask_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spec = PreprocessSpec.from_dict(dict(preprocess or {}))
        self.mask_key = mask_key

    def _mask(self, data: Mapping[Hashable, Any], volume: Volume, where: str) -> Volume | None:
        mask = data.get(self.mask_key) if self.mask_key is not None else None
        if mask is None or (isinstance(mask, str) and not mask):
            if self.spec.needs_mask:
                option = "crop_to_mask" if self.spec.crop_to_mask else "apply_mask"
                raise InputError(f"{where}: this model's preprocessing ({option}) needs a mask "
                                 f"(give it under the key {self.mask_key or 'mask'!r})")
            return None
        mask_volume = mask if isinstance(mask, Volume) else read_mask(mask, reference=volume.geometry)
        if mask_volume.array.ndim != 3:
            raise InputError(f"{mask}: mask must be a 3D volume")
        return mask_volume

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            if isinstance(source, Volume):
                volume, where, path = check_volume(source), "image", ""
            elif isinstance(source, (str, os.PathLike)):
                volume, where, path = read_image(source), str(source), str(source)
            else:
                raise InputError(f"{key}: expected an image path or a Volume, got {type(source).__name__}")
            try:
                pre = preprocess(volume, self.spec, self._mask(d, volume, where))
            except InputError as exc:
                text = str(exc)
                raise InputError(text if text.startswith(where) else f"{where}: {text}") from None
            d[key] = torch.from_numpy(pre.image[None].copy())
            d[f"{key}_path"] = path
        return d


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def list_images(folder: str | os.PathLike, mask_folder: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for the 3D image files in ``folder`` (sorted by name); with
    ``mask_folder``, each also gets ``"mask"``: the file of the same name there.

    Raises:
        InputError: the folder does not exist or holds no image, or an image has no mask.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found (set dataset_dir)")
    images = sorted(p for p in folder.iterdir() if _is_image(p))
    if not images:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    items = [{"image": str(p)} for p in images]
    if mask_folder is not None:
        for item, image in zip(items, images):
            mask = Path(mask_folder) / image.name
            if not mask.is_file():
                raise InputError(f"{image}: no mask of the same name in {mask_folder}")
            item["mask"] = str(mask)
    return items


class LatentEncoder:
    """The bundle's ``evaluator``: encodes every batch of a data loader and writes one JSON file.

    The file holds, per image (in loader order): ``image`` (its path), ``latent`` (μ, L values),
    ``logvar`` (L values) and, with a classifier, ``probabilities`` (C values); plus the latent
    dims' meaning (``attributes``: dim, name, unit) and ``labels`` when ``meta`` is given.

    Args:
        network: an :class:`AttriVAE` (e.g. :class:`AttriVAEBundleNet`) with its weights.
        dataloader: batches with ``image`` (B, C, N, N, N) and ``image_path`` (B paths).
        output_file: the JSON file written (atomically).
        device: where the network runs (default: where its parameters are).
        meta_file: the bundle's ``configs/metadata.json`` (read as plain JSON, never evaluated).
    """

    def __init__(self, network: AttriVAE, dataloader: Iterable[Mapping[str, Any]], output_file: str | os.PathLike,
                 device: str | torch.device | None = None, meta_file: str | os.PathLike | None = None) -> None:
        self.network = network
        self.dataloader = dataloader
        self.output_file = Path(output_file)
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.meta_file = None if meta_file is None else Path(meta_file)

    def _describe(self) -> dict[str, Any]:
        import json

        if self.meta_file is None or not self.meta_file.is_file():
            return {}
        section = json.loads(self.meta_file.read_text(encoding="utf-8")).get("attrivae") or {}
        return {k: section[k] for k in ("attributes", "labels") if k in section}

    @torch.inference_mode()
    def run(self) -> Path:
        """Encode everything and write :attr:`output_file`; returns its path."""
        network = self.network.to(self.device).eval()
        dtype = next(network.parameters()).dtype
        subjects: list[dict[str, Any]] = []
        for batch in self.dataloader:
            x = torch.as_tensor(batch["image"]).to(device=self.device, dtype=dtype)
            mu, logvar = network.encode(x)
            logits = network.classify(mu)
            probs = None if logits is None else class_probabilities(logits.float())
            paths = list(batch.get("image_path") or [""] * x.shape[0])
            for i in range(x.shape[0]):
                item: dict[str, Any] = {"image": str(paths[i]), "latent": mu[i].float().cpu().tolist(),
                                        "logvar": logvar[i].float().cpu().tolist()}
                if probs is not None:
                    item["probabilities"] = probs[i].cpu().tolist()
                subjects.append(item)
        atomic.write_json(self.output_file, {**self._describe(), "subjects": subjects})
        return self.output_file
