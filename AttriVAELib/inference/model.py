"""Inference with a trained Attri-VAE: one object for Python, the CLI and the Slicer module.

:class:`AttriVAEModel` wraps a checkpoint (network, preprocessing, attribute names, units and
calibration, label names) and exposes what a user needs::

    model = AttriVAEModel.load("runs/demo")                  # run folder or model.safetensors
    enc = model.encode("subject.nii.gz")                     # Encoding: μ, log σ², p(class), attributes
    recon = model.decode(enc.mu[None])                       # (1, N, N, N) in [0, 1]
    vol = model.to_input_grid(recon[0], enc)                 # Volume on the input's exact geometry
    frames = model.traverse(enc, "wall_thickness_mm", np.linspace(4, 12, 9), units="attribute")
    live = model.decode(model.set_attribute(enc, "volume_ml", 120.0)[None], preview=True)  # slider

Everything is deterministic: the network is in eval mode and the latent code used is μ (no
sampling). Images of any size, spacing and orientation are accepted; the checkpoint's
:class:`~AttriVAELib.data.preprocessing.PreprocessSpec` maps them into the model's N³ cube and the
:class:`~AttriVAELib.data.preprocessing.GridMapping` kept in every :class:`Encoding` maps model-grid
arrays (reconstructions, traversals, heatmaps) back.

Latent vs attribute units: a regularized latent dim ``k`` is tied to attribute ``k``. Values
for traversals may be given in latent units (``units="latent"``, the raw value of μ_k) or in
the attribute's physical unit (``units="attribute"``, e.g. mm), which the stored monotone
calibration (:class:`~AttriVAELib.nn.calibration.AttributeCalibration`) converts to latent values;
physical values outside the calibrated (training) range are clamped to it.

Shapes: latents ``(B, L)``; model-grid volumes ``(N, N, N)`` in (z, y, x) order.

Why one long module: :class:`AttriVAEModel` is the one facade users, the CLI and Slicer
hold; its methods share the loaded network, the preprocessing and the calibration. What
stands alone lives beside it (:mod:`.encoding`, :mod:`AttriVAELib.nn.folded_decoder`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from AttriVAELib.core.errors import CheckpointError, ConfigError, InputError
from AttriVAELib.data.io import Volume, check_volume, read_image, read_mask
from AttriVAELib.data.preprocessing import Preprocessed, PreprocessSpec, preprocess, to_source_grid
from AttriVAELib.inference.encoding import Dim, Encoding, ImageLike
from AttriVAELib.inference.readback import ReadBack, intensity_note, read_back
from AttriVAELib.nn.calibration import AttributeCalibration
from AttriVAELib.nn.checkpoint import check_state_shapes, checkpoint_paths, load_checkpoint, split_prefix
from AttriVAELib.nn.folded_decoder import OneDNNDecoder as _OneDNNDecoder
from AttriVAELib.nn.folded_decoder import fold_decoder as _fold_decoder
from AttriVAELib.nn.model import AttriVAE, ModelConfig, class_probabilities

__all__ = ["AttriVAEModel", "Encoding", "ImageLike", "Dim"]

_UNITS = ("latent", "attribute")


class AttriVAEModel:
    """A trained Attri-VAE ready for inference (see the module docstring).

    Args:
        network: the network; put in eval mode, moved to ``device`` and its parameters frozen
            (``requires_grad=False``; Grad-CAM and integrated gradients do not need them).
        meta: the checkpoint metadata (``model_config``, ``preprocess``, ``attributes``,
            ``labels``, optional ``calibration``, ``data``).
        device: ``"auto"`` (first CUDA GPU, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
            :class:`torch.device`.
        source: the checkpoint's weights path (for caches next to it), if any.
        fast_decode: decode through a BatchNorm-folded copy of the decoder (same values up to
            float rounding): on CPU with oneDNN's fused convolution + activation kernels
            (:class:`_OneDNNDecoder`), else in channels_last_3d.
        bf16: decode everything in bf16 (emulated through autocast, and slow, on CPUs without
            AVX-512, where oneDNN has no bf16 kernels). By default only ``decode(z, preview=True)`` uses bf16,
            and only where it is native (CPUs with AVX-512-bf16/AMX, recent GPUs): ~1.9× faster
            than fp32 at 80³ on a 2-core AVX-512-bf16 CPU (26 vs 50 ms), max error ~0.01 on the
            [0, 1] output — for a live slider, not for saved volumes or metrics.
    """

    def __init__(self, network: AttriVAE, meta: Mapping[str, Any], *, device: str | torch.device = "auto",
                 source: Path | None = None, fast_decode: bool = True, bf16: bool = False) -> None:
        from AttriVAELib.nn.fastpath import select_device

        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.network = network.to(self.device).eval()
        self.meta = dict(meta)
        self.source = source
        self.config: ModelConfig = network.config
        try:
            self.spec = PreprocessSpec.from_dict(self.meta.get("preprocess") or {"size": self.config.input_size})
        except ConfigError as exc:
            raise CheckpointError(f"{source or 'checkpoint'}: invalid preprocessing settings ({exc})") from None
        if self.spec.size != self.config.input_size:
            raise CheckpointError(f"{source or 'checkpoint'}: preprocessing size {self.spec.size} differs from the "
                                  f"model input size {self.config.input_size}")
        attrs = self.meta.get("attributes") or {}
        k = self.config.num_regularized
        names = list(attrs.get("regularized") or list(attrs.get("names") or [])[:k])
        if len(names) < k:
            names += [f"dim_{i}" for i in range(len(names), k)]
        self._attribute_names = names[:k]
        all_names = list(attrs.get("names") or [])
        all_units = list(attrs.get("units") or [])
        unit_of = dict(zip(all_names, all_units))
        if not unit_of:
            from AttriVAELib.data.manifest import attribute_unit

            unit_of = {n: attribute_unit(n) for n in names}
        self._attribute_units = [str(unit_of.get(n, "")) for n in self._attribute_names]
        self._label_names = [str(n) for n in (self.meta.get("labels") or {}).get("names") or []]
        calib = self.meta.get("calibration")
        self.calibration: AttributeCalibration | None = None
        if calib and k:
            try:
                self.calibration = AttributeCalibration.from_dict(calib)
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{source or 'checkpoint'}: invalid attribute calibration ({exc})") from None
            if len(self.calibration.names) != k:
                raise CheckpointError(f"{source or 'checkpoint'}: calibration covers {len(self.calibration.names)} "
                                      f"attributes, the model regularizes {k}")
        self.fast_decode = bool(fast_decode)
        self.bf16 = bool(bf16)
        self._folded: nn.Module | None = None  # the folded decoder in plain torch (also the bf16 fallback)
        self._decoder: nn.Module | None = None
        self._cache: dict[str, Any] = {}
        for p in self.network.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, location: str | os.PathLike, device: str | torch.device = "auto", *, name: str = "model",
             verify: bool = True, **kwargs: Any) -> "AttriVAEModel":
        """Load a checkpoint from a run folder (``RUN/model.safetensors``) or a weights/metadata file.

        Raises:
            CheckpointError: missing, unreadable, tampered (checksum) or incompatible checkpoint.
            ConfigError: the requested device is not available.
        """
        location = Path(location)
        if not location.exists():
            raise CheckpointError(f"{location}: model not found (give a run folder or a model.safetensors file)")
        tensors, meta = load_checkpoint(location, name=name, verify=verify, device="cpu")
        weights, _ = checkpoint_paths(location, name)
        if "model_config" not in meta or not isinstance(meta.get("preprocess"), dict):  # no silent defaults
            what = "model configuration" if "model_config" not in meta else "preprocessing settings ('preprocess')"
            raise CheckpointError(f"{weights}: checkpoint has no {what}")
        try:
            config = ModelConfig.from_dict(meta["model_config"])
        except ConfigError as exc:
            raise CheckpointError(f"{weights}: invalid model configuration ({exc})") from None
        state = split_prefix(tensors, "model") or dict(tensors)
        check_state_shapes(config, state, weights)  # before allocating: the header's sizes must match the tensors
        network = AttriVAE(config)
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2])[:200]
            raise CheckpointError(f"{weights}: weights do not fit the model configuration ({detail})") from None
        return cls(network, meta, device=device, source=weights, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def input_size(self) -> int:
        """N: the model cube is N×N×N voxels."""
        return self.config.input_size

    @property
    def latent_size(self) -> int:
        """L: size of the latent code."""
        return self.config.latent_dim

    @property
    def num_regularized(self) -> int:
        """K: latent dims 0..K-1 are tied to the attributes :attr:`attribute_names`."""
        return self.config.num_regularized

    @property
    def regularized_dims(self) -> list[int]:
        return list(range(self.config.num_regularized))

    @property
    def attribute_names(self) -> list[str]:
        """Names of the K regularized attributes (dim k ↔ attribute k)."""
        return list(self._attribute_names)

    @property
    def attribute_units(self) -> list[str]:
        return list(self._attribute_units)

    @property
    def label_names(self) -> list[str]:
        return list(self._label_names)

    @property
    def class_names(self) -> list[str]:
        """The label names, or the class indices as strings where the checkpoint stores none."""
        return self.label_names or [str(i) for i in range(self.num_classes)]

    @property
    def has_classifier(self) -> bool:
        return self.network.has_classifier

    @property
    def num_classes(self) -> int:
        """Number of classes (2 for a binary head), 0 without a classifier."""
        return self.config.num_classes if self.network.has_classifier else 0

    def dim_index(self, dim: Dim) -> int:
        """A latent dim index from an index or a regularized attribute's name.

        Raises:
            ConfigError: unknown name or index out of range.
        """
        if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
            if not 0 <= int(dim) < self.latent_size:
                raise ConfigError(f"latent dim {dim} is out of range 0..{self.latent_size - 1}")
            return int(dim)
        text = str(dim).strip()
        if text in self._attribute_names:
            return self._attribute_names.index(text)
        if text.lstrip("-").isdigit():
            return self.dim_index(int(text))
        known = ", ".join(self._attribute_names) or "none"
        raise ConfigError(f"unknown attribute {text!r}; regularized attributes: {known} (or a dim index "
                          f"0..{self.latent_size - 1})")

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, image: ImageLike, mask: ImageLike | None = None) -> Preprocessed:
        """Read (if a path) and preprocess an image into the model cube with the checkpoint's spec.

        A mask is optional unless the spec crops to it or applies it; giving one to a model
        that does not use it is harmless (it is carried along on the model grid).
        """
        where = str(image) if not isinstance(image, Volume) else "image"
        volume = _as_volume(image)
        mask_volume = None
        if mask is not None:
            mask_volume = mask if isinstance(mask, Volume) else read_mask(mask, reference=volume.geometry)
            if mask_volume.array.ndim != 3:
                raise InputError(f"{mask}: mask must be a 3D volume")
        if self.spec.needs_mask and mask_volume is None:
            option = "crop_to_mask" if self.spec.crop_to_mask else "apply_mask"
            raise InputError(f"{where}: this model's preprocessing ({option}) needs a mask; pass one (--mask)")
        try:
            return preprocess(volume, self.spec, mask_volume)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    # ------------------------------------------------------------------ encode
    def _to_input_tensor(self, images: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.dim() == 3:
            x = x[None]
        if x.dim() == 4:
            x = x[:, None]
        n = self.input_size
        if x.dim() != 5 or tuple(x.shape[1:]) != (self.config.in_channels, n, n, n):
            raise InputError(f"model-grid input must be (B, {n}, {n}, {n}), got {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """The network's parameter dtype (float32 normally); inputs are cast to it."""
        return next(self.network.parameters()).dtype

    @torch.inference_mode()
    def encode_arrays(self, images: np.ndarray | Tensor) -> dict[str, np.ndarray | None]:
        """Encode preprocessed model-grid images (B, N, N, N) in [0, 1].

        Returns:
            ``mu`` (B, L), ``logvar`` (B, L), ``probabilities`` (B, C) or None,
            ``attributes`` (B, K) in physical units or None.
        """
        x = self._to_input_tensor(images)
        mu, logvar = self.network.encode(x)
        if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
            raise InputError("the encoder gave NaN or infinite values: its weights or this input are unusable")
        return {"mu": mu.float().cpu().numpy(), "logvar": logvar.float().cpu().numpy(),
                "probabilities": self._probabilities(mu), "attributes": self.predict_attributes(mu)}

    def encode(self, image: ImageLike, mask: ImageLike | None = None) -> Encoding:
        """Encode one image (a :class:`Volume` or a path) of any size, spacing and orientation.

        Raises:
            InputError: missing, unreadable or non-3D image; a mask that is empty, off the
                image, or required by the model and missing.
        """
        return self.encode_batch([image], None if mask is None else [mask])[0]

    def encode_batch(self, images: Sequence[ImageLike], masks: Sequence[ImageLike | None] | None = None,
                     batch_size: int = 16) -> list[Encoding]:
        """Encode several images; the network runs on batches of ``batch_size``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if masks is not None and len(masks) != len(images):
            raise InputError(f"{len(images)} images but {len(masks)} masks")
        pres = [self.preprocess(img, None if masks is None else masks[i]) for i, img in enumerate(images)]
        out: list[Encoding] = []
        for start in range(0, len(pres), max(1, int(batch_size))):
            chunk = pres[start:start + batch_size]
            res = self.encode_arrays(np.stack([p.image for p in chunk]))
            for j, pre in enumerate(chunk):
                out.append(Encoding(
                    mu=res["mu"][j], logvar=res["logvar"][j],
                    probabilities=None if res["probabilities"] is None else res["probabilities"][j],
                    attributes=None if res["attributes"] is None else res["attributes"][j],
                    mapping=pre.mapping, image=pre.image, mask=pre.mask,
                    attribute_names=self.attribute_names, attribute_units=self.attribute_units,
                    label_names=self.label_names))
                note = intensity_note(self, out[-1])
                if note:
                    out[-1].notes.append(note)
        return out

    # ------------------------------------------------------------------ latent heads
    def _latent_tensor(self, z: np.ndarray | Tensor | Sequence[float]) -> Tensor:
        t = torch.as_tensor(np.asarray(z) if not isinstance(z, Tensor) else z, dtype=torch.float32)
        if t.dim() == 1:
            t = t[None]
        if t.dim() != 2 or t.shape[1] != self.latent_size:
            raise InputError(f"latent codes must be (B, {self.latent_size}), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise InputError("latent codes contain NaN or infinite values")
        return t.to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def _probabilities(self, z: Tensor) -> np.ndarray | None:
        logits = self.network.classify(z.to(self.dtype))
        return None if logits is None else class_probabilities(logits.float()).cpu().numpy()

    def class_probabilities(self, z: np.ndarray | Tensor) -> np.ndarray | None:
        """(B, L) latents → (B, C) class probabilities (one (L,) → (C,)); None without a classifier."""
        probs = self._probabilities(self._latent_tensor(z))
        return probs[0] if probs is not None and np.ndim(z) == 1 else probs

    def predict_attributes(self, z: np.ndarray | Tensor) -> np.ndarray | None:
        """(B, L) latents → (B, K) attribute estimates in physical units (one (L,) → (K,));
        None without calibration."""
        if self.calibration is None:
            return None
        if isinstance(z, Tensor):
            z = z.detach().float().cpu().numpy()
        z = np.asarray(z, dtype=np.float64)
        out = self.calibration.predict(np.atleast_2d(z)[:, :self.num_regularized])
        return out[0] if z.ndim == 1 else out

    # ------------------------------------------------------------------ decode
    def _decoder_module(self) -> nn.Module:
        """The decoder convolutions used by :meth:`decode` (built on first use)."""
        if self._decoder is None:
            if not self.fast_decode:
                self._decoder = self.network.decoder
            else:
                folded = _fold_decoder(self.network)
                self._folded = folded.to(memory_format=torch.channels_last_3d)
                decoder: nn.Module | None = None
                if self.device.type == "cpu":
                    decoder = _OneDNNDecoder.build(folded)
                self._decoder = decoder if decoder is not None else self._folded
        return self._decoder

    def decode_tensor(self, z: Tensor, preview: bool = False) -> Tensor:
        """(B, L) tensor → (B, N, N, N) float32 tensor in [0, 1] on :attr:`device` (no grad)."""
        z = self._latent_tensor(z)
        net = self.network
        decoder = self._decoder_module()
        use_bf16 = self._use_bf16(preview)
        if use_bf16 and isinstance(decoder, _OneDNNDecoder) and not _OneDNNDecoder.bf16_capable():
            decoder = self._folded  # oneDNN refuses bf16 without AVX-512; autocast emulates it
        with torch.inference_mode():
            if isinstance(decoder, _OneDNNDecoder):
                h = net.decoder_fc(z).view(z.shape[0], *net._bottleneck_shape)
                out = decoder(h.to(torch.bfloat16 if use_bf16 else h.dtype))
            else:
                with self._autocast(use_bf16):
                    h = net.decoder_fc(z).view(z.shape[0], *net._bottleneck_shape)
                    if self.fast_decode:
                        h = h.contiguous(memory_format=torch.channels_last_3d)
                    out = torch.sigmoid(decoder(h))
        return out[:, 0].float().contiguous()

    def decode(self, z: np.ndarray | Tensor | Sequence[float], *, preview: bool = False) -> np.ndarray | Tensor:
        """Decode latent codes (B, L) (or one (L,)) → (B, N, N, N) in [0, 1], in ONE batch.

        Returns a numpy array for numpy input and a tensor (on the input's device) for tensor
        input. ``preview=True``: bf16 where it is native (see the class docstring), for
        interactive display.
        """
        if isinstance(z, Tensor):
            return self.decode_tensor(z, preview).to(z.device)
        return self.decode_tensor(torch.as_tensor(np.asarray(z, dtype=np.float32)), preview).cpu().numpy()

    def _use_bf16(self, preview: bool) -> bool:
        from AttriVAELib.nn.fastpath import bf16_supported

        return self.device.type in ("cpu", "cuda") and (self.bf16 or (preview and bf16_supported(self.device)))

    def _autocast(self, enabled: bool):
        from contextlib import nullcontext

        if enabled:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def read_back(self, image: np.ndarray, z: np.ndarray, what: str = "decoded image",
                  dims: Sequence[int] | None = None) -> ReadBack:
        """What a decoded model-grid ``image`` (N, N, N) shows when encoded again, beside what its code
        ``z`` (L,) says (the class, and the attributes of ``dims``, default all), with one warning line
        per disagreement (:mod:`AttriVAELib.inference.readback`)."""
        return read_back(self, image, z, what, dims)

    def reconstruct(self, encoding: Encoding) -> np.ndarray:
        """(N, N, N) reconstruction of an encoded image (decode of μ)."""
        return self.decode(encoding.mu[None])[0]

    def to_input_grid(self, array: np.ndarray | Tensor, encoding: Encoding, interpolator: str = "linear",
                      rescale: bool = False) -> Volume:
        """A model-grid array (N, N, N) as a :class:`Volume` with the input image's exact geometry.

        ``rescale=True`` maps [0, 1] intensities back to the input's intensity range (for
        reconstructions); heatmaps are mapped as they are. Input voxels outside the model
        cube are 0.
        """
        if isinstance(array, Tensor):
            array = array.detach().float().cpu().numpy()
        return to_source_grid(np.asarray(array), encoding.mapping, interpolator, rescale=rescale)

    # ------------------------------------------------------------------ attributes ↔ latents
    def latent_for_attribute(self, dim: Dim, value: float) -> float:
        """The latent value of regularized dim ``dim`` whose calibrated attribute is ``value``.

        Raises:
            ConfigError: ``dim`` is not a regularized dim or the checkpoint has no calibration.
        """
        k = self.dim_index(dim)
        if k >= self.num_regularized:
            raise ConfigError(f"latent dim {k} is not tied to an attribute; give values in latent units")
        if self.calibration is None:
            raise ConfigError("this checkpoint has no attribute calibration; give values in latent units")
        return float(self.calibration.latent_for(k, float(value)))

    def latent_values(self, dim: Dim, values: Iterable[float] | np.ndarray, units: str = "latent") -> np.ndarray:
        """Values for dim ``dim`` in latent units (``units="attribute"``: converted by the calibration)."""
        if units not in _UNITS:
            raise ConfigError(f"units must be one of {', '.join(_UNITS)} (got {units!r})")
        values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if values.ndim != 1 or values.size == 0:
            raise ConfigError("traversal values must be a non-empty 1-D sequence")
        if not np.isfinite(values).all():
            raise ConfigError("traversal values must be finite")
        if units == "latent":
            self.dim_index(dim)
            return values
        return np.array([self.latent_for_attribute(dim, v) for v in values])

    def set_attribute(self, encoding: Encoding | np.ndarray, name: Dim, value: float,
                      units: str = "attribute") -> np.ndarray:
        """A copy (L,) of the encoding's latent code with dim ``name`` set to ``value``.

        ``units="attribute"`` (default): ``value`` is in the attribute's physical unit and is
        converted with the calibration (``calibration.latent_for``); ``"latent"``: raw latent value.
        """
        z = np.array(encoding.mu if isinstance(encoding, Encoding) else encoding, dtype=np.float32).reshape(-1)
        k = self.dim_index(name)
        z[k] = self.latent_values(k, [value], units)[0]
        return z

    def traversal_latents(self, encoding: Encoding | np.ndarray, dim: Dim, values: Iterable[float] | np.ndarray,
                          units: str = "latent") -> np.ndarray:
        """(S, L) copies of μ with dim ``dim`` swept over ``values``."""
        base = np.asarray(encoding.mu if isinstance(encoding, Encoding) else encoding, dtype=np.float32).reshape(-1)
        k = self.dim_index(dim)
        latent = self.latent_values(k, values, units)
        z = np.repeat(base[None], len(latent), axis=0)
        z[:, k] = latent
        return z

    def traverse(self, encoding: Encoding | np.ndarray, dim: Dim, values: Iterable[float] | np.ndarray,
                 units: str = "latent", *, preview: bool = False) -> np.ndarray:
        """Decode μ with dim ``dim`` swept over ``values`` (S,) → (S, N, N, N), in one batch."""
        return self.decode(self.traversal_latents(encoding, dim, values, units), preview=preview)

    def traverse_grid(self, encoding: Encoding | np.ndarray, dim_a: Dim, values_a: Iterable[float] | np.ndarray,
                      dim_b: Dim, values_b: Iterable[float] | np.ndarray, units: str = "latent", *,
                      preview: bool = False) -> np.ndarray:
        """Two dims on a grid → (Sa, Sb, N, N, N), decoded in one batch."""
        a, b = self.dim_index(dim_a), self.dim_index(dim_b)
        if a == b:
            raise ConfigError(f"traverse_grid needs two different dims (got {a} twice)")
        za = self.traversal_latents(encoding, a, values_a, units)  # (Sa, L)
        vb = self.latent_values(b, values_b, units)
        z = np.repeat(za[:, None], len(vb), axis=1)  # (Sa, Sb, L)
        z[:, :, b] = vb[None, :]
        n = self.input_size
        return self.decode(z.reshape(-1, self.latent_size), preview=preview).reshape(len(za), len(vb), n, n, n)

    # ------------------------------------------------------------------ misc
    @property
    def run_dir(self) -> Path | None:
        """The folder holding the checkpoint, if loaded from disk."""
        return None if self.source is None else self.source.parent

    def describe(self) -> str:
        from AttriVAELib.nn.fastpath import describe_device

        attrs = ", ".join(f"{n} ({u})" if u else n for n, u in zip(self.attribute_names, self.attribute_units))
        head = "no classifier"
        if self.has_classifier:
            head = f"{self.num_classes}-class classifier ({', '.join(self.label_names)})"
        return (f"Attri-VAE {self.input_size}³, latent {self.latent_size}, K={self.num_regularized} [{attrs}], "
                f"{head}; {describe_device(self.device)}")

    def __repr__(self) -> str:
        return f"AttriVAEModel(source={str(self.source)!r}, N={self.input_size}, L={self.latent_size}, " \
               f"K={self.num_regularized}, device={self.device})"


def _as_volume(image: ImageLike) -> Volume:
    if not isinstance(image, (Volume, str, os.PathLike)):
        raise InputError(f"image must be a Volume or a path to an image file, got {type(image).__name__}")
    return check_volume(image) if isinstance(image, Volume) else read_image(image)
