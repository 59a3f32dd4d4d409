"""Counterfactuals in the latent space.

Counterfactual ("negative realization", medXGAN; VA-GAN's disease-effect map without a GAN):
encode an image, move some latent dims to a target, decode, and compare with the
reconstruction::

    z_cf = z;  z_cf[dims] = target[dims]          difference = decode(z_cf) − decode(z)

Targets (``method``):

- ``"exemplar"``: a dim that the target class spreads over more than the source class
  (``σ_target > σ_source``) takes the value of a donor, the training subject of the target
  class closest to ``z`` in the dims that stay, ``e* = argmin_e ‖(z − e)[kept]‖²``, among those
  whose decoded image the model reads back as their class (p ≥ 0.99,
  :data:`~AttriVAELib.nn.calibration.MIN_READBACK`); the other moved dims take the target
  class's mean. A class can hinge on where something is (a lesion anywhere in a wall): a class
  mean puts it at the average place, which the decoder draws as a faint brightening of the
  whole wall; a donor puts it at one place, which it draws as one lesion. Towards a class that
  holds those dims fixed (no lesion), the mean is the place to go, and no donor is needed;
- ``"class_mean"``: the training-split class mean of μ of the target class;
- ``"flip"``: with no training statistics, the nearest latent point (in the chosen dims) that
  the classifier assigns to the target class (:func:`flip_latent`);
- ``values``: explicit attribute values (physical units through the calibration, or latent units).

Class statistics and exemplars (:func:`class_statistics`) are stored in the checkpoint at the
end of training, or computed once from the training split and cached next to it.

Which dims: ``"relevant"`` (default) — dims whose class means differ by at least
``min_effect`` pooled standard deviations, or whose class standard deviations differ by a
factor of at least ``min_spread`` (a lesion's position: spread in one class, fixed in the
other), between the two classes (the largest effect if none does); ``"regularized"``;
``"all"``; or an explicit list of dims / attribute names.

Latent-path integrated gradients live in :mod:`AttriVAELib.explain.integrated_gradients`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from AttriVAELib.core.errors import AttriVAEError, CheckpointError, ConfigError, InputError
from AttriVAELib.explain import COUNTERFACTUAL_METHODS
from AttriVAELib.inference.model import AttriVAEModel, Dim, Encoding
from AttriVAELib.nn.calibration import ClassStatistics

__all__ = [
    "ClassStatistics",
    "Counterfactual",
    "LatentCounterfactual",
    "class_statistics",
    "counterfactual",
    "flip_latent",
    "select_dims",
    "stored_class_statistics",
]

CACHE_FILE = "class_statistics.json"


def _weights_digest(model: AttriVAEModel) -> str | None:
    """The checkpoint's recorded SHA-256 (checked at load), identifying the weights."""
    if model.source is None:
        return None
    sidecar = model.source.with_suffix(".json")
    try:
        return json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def class_statistics(model: AttriVAEModel, split: str = "train", cache: bool = True,
                     batch_size: int = 16) -> ClassStatistics:
    """Class means and standard deviations of μ over a split of the training data.

    Looked up, in order: in memory; in the checkpoint metadata (``class_statistics``); in
    ``RUN/class_statistics.json`` (valid only for the same weights digest); else computed by
    encoding the split (manifest and split file recorded in the checkpoint) and written there
    (atomically; skipped if the folder is read-only). Statistics stored without exemplars (a
    checkpoint from an older version) are completed from the cache or the data when they can
    be read, and used as they are when not.

    Raises:
        ConfigError: the model has no classifier or the data has fewer than two classes.
        InputError: the training data recorded in the checkpoint cannot be read.
        CheckpointError: the checkpoint's statistics are malformed.
    """
    if not model.has_classifier:
        raise ConfigError("this model has no classifier, so it has no classes to move between")
    key = f"class_statistics:{split}"
    if key in model._cache:
        return model._cache[key]
    stored = _from_checkpoint(model, split)
    stats = stored if stored is not None and stored.exemplars is not None else None
    if stats is None and cache:
        cached = _from_cache(model, split)
        stats = cached if cached is not None and cached.exemplars is not None else None  # else an older version's
    if stats is None:
        try:
            stats = _compute_class_statistics(model, split, batch_size)
        except InputError:
            if stored is None:
                raise
            stats = stored
        else:
            digest = _weights_digest(model)
            if cache and model.run_dir is not None and digest:
                _write_cache(model.run_dir / CACHE_FILE, digest, split, stats)
    model._cache[key] = stats
    return stats


def stored_class_statistics(model: AttriVAEModel, split: str = "train") -> ClassStatistics | None:
    """The class statistics stored with the model, never computed (that would read the training
    set): from the checkpoint or the cache of :func:`class_statistics`, those holding exemplars
    first; None when neither has them.

    Raises:
        CheckpointError: the checkpoint's statistics are malformed.
    """
    stored = _from_checkpoint(model, split)
    if stored is not None and stored.exemplars is not None:
        return stored
    cached = _from_cache(model, split)
    if cached is not None and (cached.exemplars is not None or stored is None):
        return cached
    return stored


def _from_checkpoint(model: AttriVAEModel, split: str) -> ClassStatistics | None:
    """The training split's statistics in the checkpoint metadata (CheckpointError if malformed)."""
    saved = model.meta.get("class_statistics")
    return ClassStatistics.from_dict(saved) if split == "train" and isinstance(saved, Mapping) else None


def _from_cache(model: AttriVAEModel, split: str) -> ClassStatistics | None:
    """The statistics in ``RUN/class_statistics.json`` written for these weights; None if absent or unreadable."""
    digest = _weights_digest(model)
    if model.run_dir is None or not digest or not (model.run_dir / CACHE_FILE).exists():
        return None
    try:
        saved = json.loads((model.run_dir / CACHE_FILE).read_text())
        entry = saved.get(split) if saved.get("weights_sha256") == digest else None
        return ClassStatistics.from_dict(entry) if entry else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError):
        return None


def _compute_class_statistics(model: AttriVAEModel, split: str, batch_size: int) -> ClassStatistics:
    from AttriVAELib.data.dataset import CohortDataset
    from AttriVAELib.data.manifest import load_manifest, load_split

    data = model.meta.get("data") or {}
    manifest_path = data.get("manifest")
    if not manifest_path:
        raise InputError("the checkpoint does not record its training data, so class means cannot be computed")
    if not Path(manifest_path).exists():
        raise InputError(f"{manifest_path}: training manifest not found, so class means cannot be computed "
                         "(give explicit attribute targets instead)")
    try:
        manifest = load_manifest(manifest_path, attributes=(model.meta.get("attributes") or {}).get("names"))
        subjects = load_split(manifest, create=False)[split]
        dataset = CohortDataset(manifest, subjects, model.spec)
    except AttriVAEError as exc:
        raise InputError(f"cannot read the training data to compute class means: {exc}") from None
    mus, readback = [], []
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start:start + batch_size, 0].float()
        mu = model.encode_arrays(images)["mu"]
        mus.append(mu.astype(np.float64))
        readback.append(model.encode_arrays(model.decode(mu))["probabilities"])
    mu = np.concatenate(mus) if mus else np.zeros((0, model.latent_size))
    labels = dataset.labels.numpy()
    stats = ClassStatistics.from_latents(mu, labels, manifest.label_names,
                                         source=f"{manifest.path} ({split} split, n={len(mu)})")
    probs = np.concatenate(readback) if readback else np.zeros((0, len(manifest.label_names)))
    return stats.with_exemplars(mu, labels, probs, [r.subject for r in dataset.records])


def _write_cache(path: Path, digest: str, split: str, stats: ClassStatistics) -> None:
    from AttriVAELib.core import atomic

    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("weights_sha256") != digest:
            saved = {}
    except (OSError, ValueError):
        saved = {}
    saved["weights_sha256"] = digest
    saved[split] = stats.to_dict()
    try:
        atomic.write_json(path, saved)
    except OSError as exc:  # read-only run folder: keep it in memory only
        warnings.warn(f"could not cache class statistics in {path}: {exc}", stacklevel=3)


# --------------------------------------------------------------------------- counterfactuals
@dataclass
class Counterfactual:
    """Result of :func:`counterfactual`. Volumes are (N, N, N) on the model grid.

    Attributes:
        z, z_cf: (L,) encoded and counterfactual latent codes.
        dims: the latent dims that were moved.
        target_class: the class moved towards (None for explicit attribute targets).
        method: ``"exemplar"``, ``"class_mean"``, ``"values"`` or ``"flip"``.
        reconstruction, counterfactual: decode(z), decode(z_cf).
        difference: counterfactual − reconstruction.
        probabilities, probabilities_cf: (C,) class probabilities of z and z_cf (or None).
        attributes, attributes_cf: (K,) calibrated attribute estimates (or None).
        exemplar: for ``"exemplar"``, the donor: its ``subject`` ID and ``readback``, the
            probability that the model reads its own decoded image as the target class.
    """

    z: np.ndarray
    z_cf: np.ndarray
    dims: list[int]
    target_class: int | None
    method: str
    reconstruction: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray
    probabilities: np.ndarray | None
    probabilities_cf: np.ndarray | None
    attributes: np.ndarray | None
    attributes_cf: np.ndarray | None
    exemplar: dict[str, Any] | None = None

    def summary(self, model: AttriVAEModel) -> dict[str, Any]:
        names = model.label_names
        out: dict[str, Any] = {"method": self.method, "dims": self.dims,
                               "target_class": None if self.target_class is None else
                               (names[self.target_class] if self.target_class < len(names) else self.target_class),
                               "moved": {_dim_name(model, d): [float(self.z[d]), float(self.z_cf[d])]
                                         for d in self.dims}}
        if self.probabilities is not None:
            out["probabilities"] = [float(p) for p in self.probabilities]
            out["probabilities_counterfactual"] = [float(p) for p in self.probabilities_cf]
        if self.attributes is not None:
            out["attributes"] = {n: [float(a), float(b)] for n, a, b in
                                 zip(model.attribute_names, self.attributes, self.attributes_cf)}
        if self.exemplar is not None:
            out["exemplar"] = dict(self.exemplar)
        return out


def _dim_name(model: AttriVAEModel, d: int) -> str:
    return model.attribute_names[d] if d < model.num_regularized else f"dim_{d}"


def _other_class(model: AttriVAEModel, encoding: Encoding) -> int:
    probs = encoding.probabilities
    if probs is None:
        raise ConfigError("this model has no classifier; give explicit attribute targets")
    order = np.argsort(-probs)
    return int(order[1])  # binary: the other class; multiclass: the runner-up


def select_dims(model: AttriVAEModel, dims: str | Sequence[Dim], stats: ClassStatistics | None = None,
                source_class: int | None = None, target_class: int | None = None,
                min_effect: float = 0.5, min_spread: float = 1.5) -> list[int]:
    """Latent dims to move: ``"relevant"``, ``"regularized"``, ``"all"`` or a list (see module docstring)."""
    if isinstance(dims, str):
        if dims == "all":
            return list(range(model.latent_size))
        if dims == "regularized":
            if not model.num_regularized:
                raise ConfigError("this model has no regularized dims")
            return model.regularized_dims
        if dims == "relevant":
            if stats is None or source_class is None or target_class is None:
                raise ConfigError("dims='relevant' needs class statistics and the two classes")
            d = np.abs(stats.effect_size(source_class, target_class))
            spread = stats.spread_ratio(source_class, target_class)
            chosen = [int(i) for i in np.flatnonzero((d >= min_effect) | (spread >= min_spread))]
            return chosen or [int(np.argmax(d))]
        return [model.dim_index(dims)]
    out = sorted({model.dim_index(d) for d in dims})
    if not out:
        raise ConfigError("no latent dims to move")
    return out


def flip_latent(model: AttriVAEModel, z: np.ndarray, target_class: int, dims: Sequence[int],
                p_target: float = 0.9, step: float = 0.05, max_steps: int = 400) -> np.ndarray:
    """A latent code close to ``z`` (moving only ``dims``) that the classifier assigns to
    ``target_class`` with probability ≥ ``p_target``: normalized gradient steps on
    −log p(target | z). Needs no training data; the classifier is a tiny MLP, so this is fast.
    """
    net = model.network
    idx = torch.as_tensor(list(dims), dtype=torch.long, device=model.device)
    zt = torch.as_tensor(np.asarray(z, dtype=np.float32), device=model.device)[None].clone()
    with torch.inference_mode(False), torch.enable_grad():
        zt = zt.clone()
        for _ in range(max_steps):
            zt.requires_grad_(True)
            logits = net.classify(zt)
            logp = (torch.nn.functional.logsigmoid(logits if target_class == 1 else -logits) if logits.dim() == 1
                    else torch.log_softmax(logits, dim=1)[:, target_class])
            if float(logp.detach().exp()) >= p_target:
                break
            (grad,) = torch.autograd.grad(-logp.sum(), zt)
            g = torch.zeros_like(grad)
            g[:, idx] = grad[:, idx]
            zt = (zt - step * g / g.norm().clamp_min(1e-12)).detach()
    return zt.detach()[0].cpu().numpy()


def counterfactual(model: AttriVAEModel, encoding: Encoding, *, target_class: int | str | None = None,
                   dims: str | Sequence[Dim] = "relevant", values: Mapping[Dim, float] | None = None,
                   units: str = "attribute", stats: ClassStatistics | None = None, method: str = "auto",
                   min_effect: float = 0.5, min_spread: float = 1.5) -> Counterfactual:
    """Move latent dims of an encoded image to a target, decode, and diff with the reconstruction.

    Args:
        model: the inference model.
        encoding: the encoded image.
        target_class: class (index or name) to move towards; default: the other class
            (binary) or the runner-up (multiclass).
        dims: which dims to move (ignored with ``values``).
        values: explicit targets ``{dim or attribute name: value}`` in ``units``
            (``"attribute"``: physical units via the calibration; ``"latent"``).
        stats: class statistics (default: :func:`class_statistics` of the training split).
        method: ``"exemplar"`` (the dims the target class spreads over from the nearest training
            subject of that class, the others from its mean),
            ``"class_mean"`` (the target class's training mean), ``"flip"`` (nearest latent
            classified as the target, :func:`flip_latent`) or ``"auto"`` (exemplar if the
            statistics hold exemplars, else class mean if they exist, else flip); see the
            module docstring.
        min_effect, min_spread: thresholds for ``dims="relevant"``.

    Returns:
        :class:`Counterfactual` with volumes on the model grid.
    """
    z = np.asarray(encoding.mu, dtype=np.float32).copy()
    z_cf = z.copy()
    t_class: int | None = None
    donor: dict[str, Any] | None = None
    if values:
        chosen = []
        for dim, value in values.items():
            k = model.dim_index(dim)
            z_cf[k] = model.latent_values(k, [value], units)[0]
            chosen.append(k)
        dims_list, how = sorted(set(chosen)), "values"
    else:
        if not model.has_classifier:
            raise ConfigError("this model has no classifier; give explicit attribute targets (values=...)")
        t_class = _class_index(model, target_class) if target_class is not None else _other_class(model, encoding)
        own = int(encoding.predicted_class)
        if t_class == own and method != "flip":
            own = _other_class(model, encoding)
        if method not in COUNTERFACTUAL_METHODS:
            raise ConfigError(f"counterfactual method must be {', '.join(COUNTERFACTUAL_METHODS)} (got {method!r})")
        if stats is None and method != "flip":
            try:
                stats = class_statistics(model)
            except InputError:
                if method != "auto":
                    raise
        if stats is not None and method != "flip":
            dims_list = select_dims(model, dims, stats, own, t_class, min_effect, min_spread)
            z_cf[dims_list], how, donor = _class_target(stats, z, own, t_class, dims_list, method)
        else:
            if isinstance(dims, str) and dims == "relevant":
                dims_list = list(range(model.latent_size))
            else:
                dims_list = select_dims(model, dims)
            z_cf = flip_latent(model, z, t_class, dims_list)
            how = "flip"
    volumes = model.decode(np.stack([z, z_cf]))
    probs = model.class_probabilities(np.stack([z, z_cf]))
    attrs = model.predict_attributes(np.stack([z, z_cf]))
    return Counterfactual(
        z=z, z_cf=z_cf, dims=[int(d) for d in dims_list], target_class=t_class, method=how,
        reconstruction=volumes[0], counterfactual=volumes[1], difference=volumes[1] - volumes[0],
        probabilities=None if probs is None else probs[0], probabilities_cf=None if probs is None else probs[1],
        attributes=None if attrs is None else attrs[0], attributes_cf=None if attrs is None else attrs[1],
        exemplar=donor)


def _class_target(stats: ClassStatistics, z: np.ndarray, source: int, target: int, dims: list[int],
                  method: str) -> tuple[np.ndarray, str, dict[str, Any] | None]:
    """Values of ``dims`` towards ``target``, the method used and the donor (see the module docstring)."""
    means = stats.means[target, dims]
    k = stats.nearest_exemplar(z, target, dims) if method in ("auto", "exemplar") else None
    if method == "exemplar" and k is None:
        raise ConfigError("these class statistics hold no exemplars of the target class; use method class_mean or flip")
    spread = stats.stds[target, dims] > stats.stds[source, dims]
    if k is None or not spread.any():
        return means, "class_mean", None
    subjects, readback = stats.exemplar_subjects, stats.exemplar_readback
    donor = {"subject": subjects[k] if subjects else "",
             "readback": float(readback[k]) if readback is not None else float("nan")}
    return np.where(spread, stats.exemplars[k, dims], means), "exemplar", donor


def _class_index(model: AttriVAEModel, target: int | str) -> int:
    names = model.label_names
    if isinstance(target, str) and target in names:
        return names.index(target)
    try:
        k = int(target)
    except (TypeError, ValueError):
        raise ConfigError(f"unknown class {target!r}; classes: {', '.join(names)}") from None
    if not 0 <= k < max(model.num_classes, 2):
        raise ConfigError(f"class index {k} out of range; classes: {', '.join(names)}")
    return k


class LatentCounterfactual:
    """Counterfactual explanation of an encoded image, captum style: one class, one verb.

    Example::

        cf = LatentCounterfactual(model).attribute(encoding, target=0)   # towards class 0
        cf.difference                                                  # (N, N, N) model grid
    """

    def __init__(self, model: AttriVAEModel, *, dims: str | Sequence[Dim] = "relevant", method: str = "auto",
                 min_effect: float = 0.5, min_spread: float = 1.5) -> None:
        self.model = model
        self.dims = dims
        self.method = method
        self.min_effect = min_effect
        self.min_spread = min_spread

    def attribute(self, encoding: Encoding, target: int | str | None = None,
                  values: Mapping[Dim, float] | None = None, units: str = "attribute") -> Counterfactual:
        """The counterfactual of ``encoding`` towards class ``target`` (default: the other class),
        or towards explicit attribute ``values``; see :func:`counterfactual`."""
        return counterfactual(self.model, encoding, target_class=target, dims=self.dims, values=values,
                              units=units, method=self.method, min_effect=self.min_effect,
                              min_spread=self.min_spread)
