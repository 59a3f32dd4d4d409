"""Training: single process, or distributed with ``torchrun -m AttriVAELib.cli train …``.

A run folder holds::

    config.yaml            resolved configuration
    run.json               data location and attribute/label names (written first)
    model.safetensors/.json  best model on the validation split (never the test split)
    last.safetensors/.json   resumable state: weights, optimizer, epoch, history
    metrics.csv            one row per epoch; tensorboard/ event files
    heldout.json           test-split summary written at the end

Every epoch draws its randomness (shuffling, dropout, sampling, augmentation) from
``(seed, epoch)``, so a run resumed from its last completed epoch ends with the same
weights as an uninterrupted one on CPU.

Why one long module: :class:`Trainer` is one loop (data, model, optimizer, precision, DDP,
validation, checkpoints, logs) whose parts share its state; what stands alone lives beside
it (:mod:`.distributed`, :mod:`.heldout`, :mod:`.config`, :mod:`.presets`).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist

from AttriVAELib.cohorts.registry import get_cohort
from AttriVAELib.core import atomic
from AttriVAELib.core.errors import CheckpointError, ConfigError, OutputError, TrainingError
from AttriVAELib.data.cohort_files import read_cohort_info
from AttriVAELib.data.manifest import (SPLIT_FILE, AttributeScaler, attribute_unit, load_manifest, load_split,
                                       read_split_file, split_settings_note)
from AttriVAELib.nn.checkpoint import (load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint,
                                       split_prefix)
from AttriVAELib.nn.model import class_probabilities
from AttriVAELib.train.config import dump_yaml, load_yaml, resolve_config
from AttriVAELib.train.distributed import DistContext, close_distributed, init_distributed, log_main, state_digest
from AttriVAELib.train.heldout import add_calibration, heldout_summary, latent_scores

LOSS_TERMS = ("total", "reconstruction", "kl", "ar", "linear", "reencoded_ar", "measured", "consistency", "classification",
              "l1")


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


def learning_rate(optim: Mapping[str, Any], step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``lr``. ``cosine``: from ``lr`` at step 0 down to ``lr_min`` at the last step
    (half a cosine period), a function of the step alone, so a resumed run needs no extra state.
    """
    lr = float(optim["lr"])
    if optim.get("lr_schedule", "constant") == "constant" or total_steps <= 1:
        return lr
    lr_min = float(optim.get("lr_min", 0.0))
    progress = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Trains one model on a manifest's train split, selecting on its validation split."""

    def __init__(self, config: dict, data: str | os.PathLike, run_dir: str | os.PathLike, *,
                 resume: bool = False, progress: bool = True, ctx: DistContext | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        from AttriVAELib.nn.fastpath import describe_device, select_device

        self.ctx = ctx or DistContext()
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress and self.ctx.is_main
        self.log = log or (lambda m: log_main(m, self.ctx))
        self.resuming = resume
        tcfg = config["train"]
        if tcfg["num_threads"]:
            torch.set_num_threads(int(tcfg["num_threads"]))
        self.device = select_device(tcfg["device"])
        if self.ctx.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        self.log(f"device: {describe_device(self.device)}")
        if tcfg["deterministic"] and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        dcfg = config["data"]
        self.manifest = load_manifest(data, attributes=dcfg["attributes"])
        self._prepare_split()
        self.scaler = AttributeScaler.fit(self.manifest.attribute_matrix(self.manifest.subset(self.split["train"])),
                                          self.manifest.attribute_names)
        self._build_model()
        self._build_data()
        self.measured = self._measured_loss()
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": math.inf}
        self.bad_epochs = 0
        if resume:
            self._load_state()

    # -- set-up -----------------------------------------------------------------------------
    def _prepare_split(self) -> None:
        """The run's split: its own copy (``RUN/split.json``) when resuming, else the split saved with
        the data (made now if there is none; in the user cache when the data folder is read-only)."""
        dcfg = self.config["data"]
        fractions = tuple(float(f) for f in dcfg["split_fractions"])
        own = self.run_dir / SPLIT_FILE
        if self.resuming and own.is_file():
            self.split = read_split_file(own, self.manifest)[0]
        else:
            if self.ctx.is_main:
                note = split_settings_note(self.manifest, int(dcfg["split_seed"]), fractions)
                if note:
                    self.log(note)
                self.split = load_split(self.manifest, seed=int(dcfg["split_seed"]), fractions=fractions, log=self.log)
            if self.ctx.enabled:
                dist.barrier()
            if not self.ctx.is_main:
                self.split = load_split(self.manifest, create=False)
        for name in ("train", "val"):
            if not self.split[name]:
                raise ConfigError(f"the {name} split of {self.manifest.path} is empty; use more subjects or change "
                                  "data.split_fractions")

    def _build_model(self) -> None:
        from AttriVAELib.nn.losses import AttriVAELoss, LossConfig
        from AttriVAELib.nn.model import AttriVAE, ModelConfig

        mcfg = dict(self.config["model"])
        lcfg = LossConfig.from_dict(self.config["loss"])
        n_attr = len(self.manifest.attribute_names)
        if mcfg.get("num_regularized") is None or (lcfg.gamma > 0 and not mcfg.get("num_regularized")):
            mcfg["num_regularized"] = n_attr if lcfg.gamma > 0 else 0
        k = int(mcfg["num_regularized"])
        if k > n_attr:
            raise ConfigError(f"model.num_regularized={k} is larger than the number of attributes ({n_attr}: "
                              f"{', '.join(self.manifest.attribute_names) or 'none'})")
        if lcfg.gamma > 0 and k == 0:
            raise ConfigError("loss.gamma > 0 needs at least one attribute column in the manifest")
        if mcfg.get("num_classes", 2):
            if not self.manifest.label_names:
                raise ConfigError(f"a classifier was requested but {self.manifest.path.name} has no 'label' column; "
                                  "use a preset without a classifier (vae, beta_vae, ar_vae) or model.num_classes: 0")
            if len(self.manifest.label_names) < 2:
                raise ConfigError(f"a classifier needs at least two classes; {self.manifest.path.name} has "
                                  f"{self.manifest.label_names}")
            labels = self.manifest.labels()
            rare = [(n, int((labels == i).sum())) for i, n in enumerate(self.manifest.label_names)
                    if (labels == i).sum() < 2]
            if rare:
                name, count = rare[0]
                raise ConfigError(f"{self.manifest.path}: label {name!r} has only {count} subject; a class needs at "
                                  "least 2 (one to train on, one to validate), so add subjects or remove that class")
            missing = [n for i, n in enumerate(self.manifest.label_names)
                       if not (self.manifest.labels(self.manifest.subset(self.split["train"])) == i).any()]
            if missing:
                raise ConfigError(f"the train split of {self.manifest.path} has no subject of class "
                                  f"{', '.join(map(repr, missing))}; delete the saved split to make a stratified one, "
                                  "or add subjects of that class")
            mcfg["num_classes"] = len(self.manifest.label_names)
        pre = dict(self.config["data"]["preprocess"])
        if "size" in pre and "input_size" not in self.config["model"]:
            mcfg["input_size"] = int(pre["size"])
        pre["size"] = int(mcfg.get("input_size", 80))
        self.config["data"]["preprocess"] = pre
        self.model_config = ModelConfig.from_dict(mcfg)
        self.model_config.validate()
        self.config["model"] = self.model_config.to_dict()
        self.loss_config = lcfg
        # The reconstruction is encoded again only where a loss term reads it.
        self.reencode = (lcfg.reencoded_gamma > 0 and k > 0) or (lcfg.reencoded_alpha > 0 and bool(mcfg["num_classes"]))
        self.consistency = lcfg.reencoded_alpha > 0 or lcfg.swap_alpha > 0 or lcfg.swap_gamma > 0
        torch.manual_seed(int(self.config["train"]["seed"]))
        self.model = AttriVAE(self.model_config).to(self.device)
        if self.config["train"]["init_from"] and not self.resuming:  # a resumed run has its own weights
            self._init_from(self.config["train"]["init_from"])
        self.criterion = AttriVAELoss(lcfg)
        self._setup_fast_path()
        ocfg = self.config["optim"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(ocfg["lr"]),
                                          weight_decay=float(ocfg["weight_decay"]))
        self.train_model: torch.nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids)
        if self.config["train"]["compile"]:
            # Compiled for training only; evaluation and checkpoints use the eager module
            # (same parameters), so state-dict keys never carry a compile prefix.
            self.train_model = torch.compile(self.train_model)

    def _init_from(self, location: str | os.PathLike) -> None:
        """Start from the weights of another run's best model (same network configuration)."""
        from AttriVAELib.nn.checkpoint import checkpoint_paths

        weights, _ = checkpoint_paths(location, "model")
        if not weights.exists():
            raise CheckpointError(f"train.init_from: {location}: no model.safetensors to start from")
        tensors, meta = load_checkpoint(location, name="model", device="cpu")
        differ = self._differing_model_fields(meta)
        if differ:
            raise CheckpointError(f"train.init_from: {weights} has another network configuration "
                                  f"(differs in {', '.join(differ)})")
        self.model.load_state_dict(split_prefix(tensors, "model"))
        self.log(f"starting from the weights of {weights}")

    def _differing_model_fields(self, meta: Mapping[str, Any]) -> list[str]:
        """The network configuration fields in which a checkpoint's metadata differs from this run."""
        ours, saved = self.model_config.to_dict(), meta.get("model_config") or {}
        return sorted(k for k in ours.keys() | saved.keys() if saved.get(k) != ours.get(k))

    def _setup_fast_path(self) -> None:
        from AttriVAELib.nn.fastpath import bf16_supported

        tcfg = self.config["train"]
        precision = tcfg["precision"]
        if precision == "auto":
            precision = "bf16" if bf16_supported(self.device) else "fp32"
        elif precision == "bf16" and not bf16_supported(self.device):
            self.log(f"bf16 requested but {self.device} has no fast bf16 support; it may be slow")
        self.precision = precision
        self.channels_last = bool(tcfg["channels_last"])
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.log(f"precision {self.precision}, channels_last_3d {'on' if self.channels_last else 'off'}, "
                 f"torch.compile {'on' if tcfg['compile'] else 'off'}")

    def _autocast(self):
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _build_data(self) -> None:
        from AttriVAELib.data.augment import build_augmentation
        from AttriVAELib.data.dataset import CohortDataset
        from AttriVAELib.data.preprocessing import PreprocessSpec

        dcfg = self.config["data"]
        self.spec = PreprocessSpec.from_dict(dcfg["preprocess"])
        self.augmentation = build_augmentation(dcfg["augmentation"]) if dcfg["augmentation"] else None
        lesions = self.loss_config.lesion_weight > 0
        if lesions and not any(r.lesion is not None for r in self.manifest.subset(self.split["train"])):
            raise ConfigError("loss.lesion_weight needs lesion masks, but no training subject in the manifest "
                              "has one (its lesion column)")
        common = dict(spec=self.spec, scaler=self.scaler, cache=bool(dcfg["cache"]), workers=int(dcfg["workers"]),
                      lesions=lesions)
        self.log(f"preprocessing {len(self.split['train'])} train + {len(self.split['val'])} val subjects "
                 f"into {self.spec.size}³")
        self.train_set = CohortDataset(self.manifest, self.split["train"], augmentation=self.augmentation,
                                       progress=self.progress, **common)
        self.val_set = CohortDataset(self.manifest, self.split["val"], progress=False, **common)

    def _measured_loss(self):
        """The cohort's measured-attribute loss, calibrated on training images, or None when it is off."""
        weight = self.loss_config.measured_gamma
        if weight <= 0:
            return None
        regularized = self.manifest.attribute_names[:self.model_config.num_regularized]
        info = read_cohort_info(self.manifest.root)
        cohort = get_cohort(info.get("generator"))
        return cohort.measured_loss(weight, self.manifest, info, self.train_set, regularized, self.log)

    def _loader(self, dataset, epoch: int, shuffle: bool) -> torch.utils.data.DataLoader:
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        batch = int(self.config["optim"]["batch_size"])
        seed = _epoch_seed(int(self.config["train"]["seed"]), epoch)
        if self.ctx.enabled:
            sampler = DistributedSampler(dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                         shuffle=shuffle, seed=int(self.config["train"]["seed"]), drop_last=shuffle)
            sampler.set_epoch(epoch)
            return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=shuffle)
        generator = torch.Generator().manual_seed(seed)
        # drop_last on train: a batch of one has no pairs for the attribute loss and breaks BatchNorm.
        return DataLoader(dataset, batch_size=batch, shuffle=shuffle, generator=generator,
                          drop_last=shuffle and len(dataset) > batch)

    # -- state --------------------------------------------------------------------------------
    def metadata(self, epoch: int) -> dict[str, Any]:
        names = self.manifest.attribute_names
        k = self.model_config.num_regularized
        return {
            "kind": "model",
            "model_config": self.model_config.to_dict(),
            "loss_config": self.loss_config.to_dict(),
            "preset": self.config.get("preset"),
            "preprocess": self.spec.to_dict(),
            "attributes": {"names": names, "units": [attribute_unit(n) for n in names],
                           "regularized": names[:k], "scaling": self.scaler.to_dict()},
            "labels": {"names": self.manifest.label_names},
            "data": {"manifest": str(self.manifest.path.resolve()), "split_file": str((self.run_dir / SPLIT_FILE).resolve())},
            "epoch": epoch,
            "best": self.best,
            "history": self.history,
            "config": self.config,
        }

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def save_last(self, epoch: int) -> None:
        tensors = self._model_tensors()
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        meta = self.metadata(epoch)
        meta.update(kind="training_state", optimizer=opt_meta, bad_epochs=self.bad_epochs)
        save_checkpoint(self.run_dir, tensors, meta, name="last")

    def save_best(self, epoch: int) -> None:
        save_checkpoint(self.run_dir, self._model_tensors(), self.metadata(epoch), name="model")

    def _load_state(self) -> None:
        tensors, meta = load_checkpoint(self.run_dir, name="last", device="cpu")
        if meta.get("kind") != "training_state":
            raise CheckpointError(f"{self.run_dir}/last.safetensors is not a training state")
        if self._differing_model_fields(meta):
            raise CheckpointError(f"{self.run_dir}: saved model configuration differs from this run's configuration")
        self.model.load_state_dict(split_prefix(tensors, "model"))
        self.optimizer.load_state_dict(optimizer_from_tensors(tensors, meta["optimizer"]))
        self.start_epoch = int(meta["epoch"]) + 1
        self.history = list(meta["history"])
        self.best = dict(meta["best"])
        self.bad_epochs = int(meta.get("bad_epochs", 0))
        self.log(f"resuming {self.run_dir} after epoch {self.start_epoch} of {self.config['train']['epochs']}")

    # -- loop ------------------------------------------------------------------------------------
    def _batch_to_device(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        k = self.model_config.num_regularized
        attrs = batch["attributes"][:, :k].to(self.device).float() if k else None
        labels = batch["label"].to(self.device) if self.model_config.num_classes else None
        return x, attrs, labels

    def _lesion(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The batch's lesion masks on the device (B, 1, N, N, N), or None when the loss needs none."""
        if "lesion" not in batch:
            return None
        return batch["lesion"].to(self.device, non_blocking=True)

    def _step_losses(self, model: Callable, batch: Mapping[str, Any], step: int) -> dict[str, torch.Tensor]:
        x, attrs, labels = self._batch_to_device(batch)
        with self._autocast():
            outputs = model(x, reencode=self.reencode)
        losses = self.criterion(outputs, x, attrs, labels, model=self.model, step=step, lesion=self._lesion(batch))
        return self._add_consistency(self._add_measured(losses, outputs, x, attrs), outputs, attrs, labels)

    def _add_consistency(self, losses: dict[str, torch.Tensor], outputs: Mapping[str, torch.Tensor],
                         attrs: torch.Tensor | None, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``losses`` with the image-latent consistency terms (:mod:`AttriVAELib.nn.consistency`) added."""
        term = torch.zeros((), device=losses["total"].device)
        if not self.consistency:  # off (the default): nothing to compute on this step
            losses["consistency"] = term
            return losses
        from AttriVAELib.nn.consistency import reencoded_class_loss, swap_consistency

        cfg = self.loss_config
        with self._autocast():
            if cfg.reencoded_alpha > 0 and "recon_mu" in outputs and labels is not None and self.model.has_classifier:
                term = term + cfg.reencoded_alpha * reencoded_class_loss(self.model, outputs["recon_mu"], labels,
                                                                         cfg.class_weights)
            if cfg.swap_alpha > 0 or cfg.swap_gamma > 0:
                term = term + swap_consistency(self.model, outputs["z"], attrs, alpha=cfg.swap_alpha,
                                               gamma=cfg.swap_gamma, delta=cfg.delta)
        losses["consistency"] = term.float()
        losses["total"] = losses["total"] + losses["consistency"]
        return losses

    def _add_measured(self, losses: dict[str, torch.Tensor], outputs: Mapping[str, torch.Tensor], x: torch.Tensor,
                      attrs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``losses`` with the measured-thickness term (0 when it is off) added to ``total``."""
        term = torch.zeros((), device=losses["total"].device)
        if self.measured is not None and attrs is not None:
            with self._autocast():
                term = self.measured(self.model.decode, outputs, x, attrs)
        losses["measured"] = term
        losses["total"] = losses["total"] + term
        return losses

    def train_epoch(self, epoch: int, bar) -> dict[str, float]:
        torch.manual_seed(_epoch_seed(int(self.config["train"]["seed"]), epoch))
        if self.augmentation is not None and hasattr(self.augmentation, "set_random_state"):
            self.augmentation.set_random_state(seed=_epoch_seed(int(self.config["train"]["seed"]), epoch))
        self.train_model.train()
        sums = {k: 0.0 for k in LOSS_TERMS}
        count = 0
        loader = self._loader(self.train_set, epoch, shuffle=True)
        step0 = epoch * len(loader)
        total_steps = int(self.config["train"]["epochs"]) * len(loader)
        for i, batch in enumerate(loader):
            losses = self._step_losses(self.train_model, batch, step0 + i)
            self._check_finite(losses["total"], epoch, i)
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            lr = learning_rate(self.config["optim"], step0 + i, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            n = batch["image"].shape[0]
            count += n
            values = {k: float(losses[k].detach()) for k in LOSS_TERMS}
            for k in LOSS_TERMS:
                sums[k] += values[k] * n
            if bar is not None:
                bar.update(1)
                measured = f" meas {values['measured']:.2f}" if self.measured is not None else ""
                consistency = f" cons {values['consistency']:.3f}" if values["consistency"] else ""
                bar.set_postfix_str(f"ep {epoch + 1} loss {values['total']:.1f} rec {values['reconstruction']:.1f} "
                                    f"kl {values['kl']:.1f} ar {values['ar']:.2f}{measured} "
                                    f"cls {values['classification']:.3f}{consistency}", refresh=False)
        totals = torch.tensor([sums[k] for k in LOSS_TERMS] + [count], dtype=torch.float64)
        if self.ctx.enabled:
            dist.all_reduce(totals)
            self._average_buffers()
        row = {f"train_{k}": float(totals[i] / max(totals[-1], 1)) for i, k in enumerate(LOSS_TERMS)}
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return row

    def _check_finite(self, total: torch.Tensor, epoch: int, step: int) -> None:
        """Stop with one line, before the step is applied, when the loss is NaN or infinite."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(total.detach())) else 1.0])
        if self.ctx.enabled:  # every rank stops at the same step, or the others would wait forever
            bad = bad.to(self.device)
            dist.all_reduce(bad)
            bad = bad.cpu()
        if bad.item():
            kept = (f"the last completed epoch is kept in {self.run_dir / 'last.safetensors'}"
                    if epoch > self.start_epoch or (self.run_dir / "last.safetensors").exists() else "nothing was saved")
            raise TrainingError(f"training diverged: the loss is {float(total.detach()):g} at epoch {epoch + 1}, step {step + 1} "
                                f"({kept}); try a lower learning rate (--lr) or --precision fp32")

    @torch.no_grad()
    def _average_buffers(self) -> None:
        """Average BatchNorm running statistics over ranks.

        DDP broadcasts buffers at the start of each forward, so after the last step of an
        epoch each rank holds statistics of its own batch; averaging makes every rank (and
        the checkpoint) hold the same, better-estimated statistics.
        """
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.ctx.world_size

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float]:
        self.model.eval()
        sums = {k: 0.0 for k in LOSS_TERMS}
        count = 0
        mus, attrs, labels, probs = [], [], [], []
        for batch in self._loader(self.val_set, epoch, shuffle=False):
            x, a, y = self._batch_to_device(batch)
            with self._autocast():
                out = self.model(x, reencode=self.reencode)
            losses = self.criterion(out, x, a, y, model=self.model, step=10**9, lesion=self._lesion(batch))
            losses = self._add_measured(losses, out, x, a)
            losses = self._add_consistency(losses, out, a, y)
            n = x.shape[0]
            count += n
            for k in LOSS_TERMS:
                sums[k] += float(losses[k]) * n
            mus.append(out["mu"].float().cpu())
            attrs.append(batch["attributes"].float())
            labels.append(batch["label"])
            if out.get("logits") is not None:
                probs.append(class_probabilities(out["logits"].float()).cpu())
        result = {f"val_{k}": sums[k] / max(count, 1) for k in LOSS_TERMS}
        result.update(latent_scores(torch.cat(mus).numpy(), torch.cat(attrs).numpy(), torch.cat(labels).numpy(),
                                    torch.cat(probs).numpy() if probs else None,
                                    self.model_config.num_regularized, prefix="val_"))
        return result

    def fit(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        tcfg = self.config["train"]
        epochs = int(tcfg["epochs"])
        writer = self._tensorboard()
        steps_per_epoch = len(self._loader(self.train_set, 0, shuffle=True))
        bar = None
        if self.progress:
            bar = tqdm(total=(epochs - self.start_epoch) * steps_per_epoch, desc="train", unit="step",
                       dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        stopped_early = False
        started = time.perf_counter()
        budget_s = float(tcfg.get("max_minutes") or 0) * 60.0
        keep_last = tcfg["selection_metric"] == "last"
        try:
            for epoch in range(self.start_epoch, epochs):
                t0 = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update(self.train_epoch(epoch, bar))
                if (epoch + 1) % int(tcfg["val_every"]) == 0 or epoch + 1 == epochs:
                    row.update(self.validate(epoch))
                row["seconds"] = time.perf_counter() - t0
                self.history.append(row)
                improved = "val_total" in row and (keep_last or row["val_total"] < self.best["score"])
                if improved:
                    self.best = {"epoch": epoch + 1, "score": row["val_total"],
                                 "metric": "last" if keep_last else "val_total"}
                    self.bad_epochs = 0
                elif "val_total" in row:
                    self.bad_epochs += 1
                if self.ctx.is_main:
                    if improved:
                        self.save_best(epoch + 1)
                    self.save_last(epoch)
                    self._write_metrics(writer, row)
                    if bar is None:
                        self.log(_format_row(row, epochs))
                    elif "val_total" in row:
                        bar.write(_format_row(row, epochs), file=sys.stderr)
                if self.ctx.enabled:
                    dist.barrier()
                patience = int(tcfg["patience"])
                if patience and self.bad_epochs >= patience:
                    self.log(f"early stopping after epoch {epoch + 1}: no validation improvement in {patience} epochs")
                    stopped_early = True
                    break
                # Every rank stops at the same epoch: rank 0's clock decides.
                over = torch.tensor([float(budget_s > 0 and time.perf_counter() - started >= budget_s)])
                if self.ctx.enabled:
                    dist.broadcast(over, 0)
                if over.item() and epoch + 1 < epochs:
                    self.log(f"time budget of {budget_s / 60:g} min reached after epoch {epoch + 1}")
                    stopped_early = True
                    break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        if self.ctx.enabled:
            self._record_rank_digest()
        return {"best": self.best, "epochs_run": len(self.history), "stopped_early": stopped_early}

    def _record_rank_digest(self) -> None:
        digest = state_digest(self.model)
        atomic.write_json(self.run_dir / "ranks" / f"rank-{self.ctx.rank}.json",
                          {"rank": self.ctx.rank, "world_size": self.ctx.world_size, "state_sha256": digest})
        digests: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(digests, digest)
        if self.ctx.is_main:
            same = len(set(digests)) == 1
            self.log(f"ranks hold {'identical' if same else 'DIFFERENT'} weights after training")

    def _tensorboard(self):
        if not self.ctx.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            self.log("tensorboard not installed: no event files (metrics.csv is still written)")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.start_epoch + 1)

    def _write_metrics(self, writer, row: Mapping[str, Any]) -> None:
        keys: list[str] = []
        for r in self.history:
            keys.extend(k for k in r if k not in keys)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic.write_text(self.run_dir / "metrics.csv", buf.getvalue())
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    tag = k.replace("train_", "train/").replace("val_", "val/")
                    writer.add_scalar(tag, v, row["epoch"])
            writer.flush()


def _format_row(row: Mapping[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train {row['train_total']:.1f}"]
    for key in ("val_total", "val_auc", "val_spearman_min"):
        if key in row:
            parts.append(f"{key[4:]} {row[key]:.3f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("data"), str) or not info["data"]:
        raise ConfigError(f"{path}: not a valid run file (it must name the run's data); the run cannot be resumed")
    return info


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``) for the life of one training process.

    A second ``attrivae train`` into the same folder stops at once with one line instead of both
    writing it. The lock is the OS's (``flock``/``LockFileEx`` through :mod:`filelock`): a killed
    process releases it, so a stale lock never blocks a rerun or ``--resume``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / ".lock"
        self._lock = None

    def __enter__(self) -> "RunLock":
        from filelock import FileLock, Timeout

        self._lock = FileLock(str(self.path), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            owner = ""
            try:
                owner = f" (pid {int(self.path.with_name('.lock.pid').read_text().strip())})"
            except (OSError, ValueError):
                pass
            raise OutputError(f"{self.run_dir}: another attrivae train{owner} is writing this run folder; wait for it "
                              "to finish or choose another --out") from None
        try:
            self.path.with_name(".lock.pid").write_text(f"{os.getpid()}\n")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()


def train(data: str | os.PathLike | None, out: str | os.PathLike, *, config: dict | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. ``config`` is a resolved config (see :mod:`config`).

    The run folder is locked while the process writes it (:class:`RunLock`): a second process
    training into it stops with :class:`~AttriVAELib.core.errors.OutputError`.
    """
    run_dir = Path(out)
    ctx = init_distributed((config or {}).get("train", {}).get("device", "auto"))
    created = False
    lock: RunLock | None = None
    try:
        if resume:
            if not (run_dir / "run.json").exists() or not (run_dir / "config.yaml").exists():
                raise ConfigError(f"{run_dir}: not a run folder to resume (no run.json/config.yaml)")
        else:
            if config is None:
                config = resolve_config()
            if data is None:
                raise ConfigError("--data is required (a manifest CSV or a folder holding manifest.csv)")
            if run_dir.exists() and not run_dir.is_dir():
                raise ConfigError(f"{run_dir}: is a file, not a run folder")
        if ctx.is_main:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run_dir).__enter__()
            atomic.remove_stale(run_dir)
        if resume:
            run_info = _read_run_json(run_dir)
            if not (run_dir / "last.safetensors").exists():
                raise ConfigError(f"{run_dir}: nothing to resume yet (no last.safetensors); start it again without --resume")
            saved = load_yaml(run_dir / "config.yaml")
            config = resolve_config(saved.pop("preset", "attri_vae"), saved, None)
            data = run_info["data"]
        elif (run_dir / "last.safetensors").exists():
            raise ConfigError(f"{run_dir}: holds a run already; pass --resume to continue it or choose another --out")
        trainer = Trainer(config, data, run_dir, resume=resume, progress=progress, ctx=ctx)
        if ctx.is_main:
            atomic.write_text(run_dir / "config.yaml", dump_yaml(trainer.config))
            atomic.write_json(run_dir / "run.json", {"data": str(Path(data).resolve()),
                                                     "attributes": trainer.manifest.attribute_names,
                                                     "labels": trainer.manifest.label_names})
            atomic.write_json(run_dir / SPLIT_FILE, {"manifest": str(trainer.manifest.path.resolve()),
                                                     "subjects": trainer.split})
        if ctx.enabled:
            dist.barrier()
        summary = trainer.fit()
        if ctx.is_main and (run_dir / "model.safetensors").exists():
            add_calibration(run_dir)
        if ctx.is_main and trainer.split["test"] and (run_dir / "model.safetensors").exists():
            held = heldout_summary(run_dir)
            atomic.write_json(run_dir / "heldout.json", held)
            summary["heldout"] = held
        summary["run_dir"] = str(run_dir)
        # Every rank leaves together (rank 0 may still be calibrating), and the process group is
        # destroyed before the interpreter exits. The DDP wrapper is freed first: its reducer
        # holds gloo work whose teardown during interpreter finalization aborts the process.
        del trainer
        gc.collect()
        close_distributed(ctx)
        return summary
    except BaseException:
        if lock is not None and created and not any(p.name not in (".lock", ".lock.pid") for p in run_dir.iterdir()):
            lock.__exit__()
            lock = None
            for name in (".lock", ".lock.pid"):
                (run_dir / name).unlink(missing_ok=True)
            try:
                run_dir.rmdir()  # nothing was written: leave no empty run folder behind
            except OSError:
                pass
        raise
    finally:
        if lock is not None:
            lock.__exit__()
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()


#: :func:`train` under the name the top-level API exports (``AttriVAELib.train`` is this subpackage).
train_model = train
