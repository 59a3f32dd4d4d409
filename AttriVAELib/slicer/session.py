"""GUI-free logic of the AttriVAE Slicer module: one interactive session on an MRML scene.

The module's ``AttriVAELogic`` delegates here, so everything the user can do from the panel
is also scriptable from Slicer's Python console and testable against a bare
``slicer.vtkMRMLScene()`` from the ``slicer-core`` wheel::

    from AttriVAELib.slicer.session import AttriVAESession
    session = AttriVAESession(slicer.mrmlScene)
    session.load_model("demo")                          # or a run folder / model.safetensors
    summary = session.encode(volumeNode)                # probabilities, attributes, slider ranges
    recon = session.set_latent(0, summary["dims"][0]["max"])   # ONE "AttriVAE reconstruction" node
    maps = session.attention()                          # name -> heatmap node (Inferno, [0, 1])
    diff = session.counterfactual("other_class")        # signed difference node
    sequence = session.traversal(0, -2, 2, 9)          # a Sequences-module traversal (+ browser)
    session.save_state()                                # settings + latent saved with the scene

Rules it follows:

* No Qt here, and ``slicer``/``vtk``/``torch`` are imported inside functions (through
  :mod:`AttriVAELib.slicer.mrml` for MRML), so this module imports before the dependencies are
  installed. Call it from the main thread only (MRML is not thread-safe); long work (training)
  runs in a separate process (:class:`TrainingProcess`) whose output the GUI polls.
* Every output node lives on the input volume's exact grid (its IJKToRAS), sits under the
  input's parent transform, and is reused on every update (one node per name and role).
* Errors a user can cause raise :class:`~AttriVAELib.core.errors.AttriVAEError` subclasses with a
  one-line message: no/2D/4D volume, a mask that does not overlap, a missing demo model, a
  tampered or incompatible checkpoint, a missing GPU, running out of GPU memory.
"""

from __future__ import annotations

import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from AttriVAELib.slicer import mrml
from AttriVAELib.core.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "AttriVAESession",
    "DEMO_MODEL_ENV",
    "DEVICE_CHOICES",
    "NODE_NAMES",
    "SLICER_REQUIREMENTS",
    "TORCH_REQUIREMENT",
    "TrainingProcess",
    "demo_model_dir",
    "find_demo_model",
    "missing_requirements",
    "parse_training_progress",
    "training_command",
    "training_environment",
]

#: Environment variable naming a folder that holds the demo model (overrides the shipped one).
DEMO_MODEL_ENV = "ATTRIVAE_DEMO_MODEL"
#: Device choices offered by the module.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: Names of the persistent output nodes (heatmaps get ``": <attribute>"`` appended).
NODE_NAMES = {
    "reconstruction": "AttriVAE reconstruction",
    "heatmap": "AttriVAE attention",
    "counterfactual": "AttriVAE counterfactual",
    "difference": "AttriVAE counterfactual difference",
    "traversal": "AttriVAE traversal",
}
#: Python packages the engine needs inside Slicer besides torch (installed by PyTorchUtils)
#: and what Slicer bundles (numpy, SimpleITK, vtk): (pip requirement, import name).
SLICER_REQUIREMENTS = (
    ("monai>=1.3", "monai"),
    ("nibabel>=5.0", "nibabel"),
    ("scipy>=1.10", "scipy"),
    ("scikit-image>=0.21", "skimage"),
    ("scikit-learn>=1.3", "sklearn"),
    ("safetensors>=0.4", "safetensors"),
    ("tqdm>=4.64", "tqdm"),
    ("PyYAML>=6.0", "yaml"),
)
#: Most volumes one traversal may decode (each is kept in the sequence on the input grid).
MAX_TRAVERSAL_STEPS = 64
#: Margin added on both sides of the training spread of a latent dim for its slider.
SLIDER_MARGIN = 0.1
#: Smallest half-width of a slider in latent units (a collapsed dim would otherwise have none).
MIN_SLIDER_HALF_WIDTH = 0.5



# --------------------------------------------------------------------------------------
# Demo model and dependencies
# --------------------------------------------------------------------------------------


def demo_model_dir() -> list[Path]:
    """Folders searched for the demo model, in order.

    ``$ATTRIVAE_DEMO_MODEL``; the installed extension's ``Resources/DemoModel`` (Slicer
    installs module resources next to the module file, where AttriVAELib also lives); the
    source tree's ``AttriVAE/Resources/DemoModel``.
    """
    here = Path(__file__).resolve().parents[2]
    folders = []
    if os.environ.get(DEMO_MODEL_ENV):
        folders.append(Path(os.environ[DEMO_MODEL_ENV]))
    folders += [here / "Resources" / "DemoModel", here / "AttriVAE" / "Resources" / "DemoModel"]
    return folders


def find_demo_model(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the demo model (``model.safetensors`` + ``model.json``).

    Raises:
        CheckpointError: no folder holds both files.
    """
    candidates = [Path(folder)] if folder is not None else demo_model_dir()
    for candidate in candidates:
        if (candidate / "model.safetensors").is_file() and (candidate / "model.json").is_file():
            return candidate
    where = " or ".join(str(c) for c in candidates)
    raise CheckpointError(f"the demo model is not installed (no model.safetensors + model.json in {where}); "
                          "choose a trained model folder, or train one in the 'Train a model' section")


#: Oldest torch the engine supports (``torch.autograd.grad(..., is_grads_batched=True)``, safetensors I/O).
TORCH_REQUIREMENT = "torch>=2.1"


def _version_at_least(text: str, minimum: tuple[int, ...]) -> bool:
    parts = []
    for piece in re.split(r"[.+]", text)[:len(minimum)]:
        digits = re.match(r"\d+", piece)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts) >= minimum


def missing_requirements() -> list[str]:
    """Requirements (pip syntax) that are not met: torch ≥ 2.1 and :data:`SLICER_REQUIREMENTS`.

    Checks importability without importing (fast, no side effects), and torch's installed version.
    """
    import importlib.metadata
    import importlib.util

    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append(TORCH_REQUIREMENT)
    else:
        try:
            if not _version_at_least(importlib.metadata.version("torch"), (2, 1)):
                missing.append(TORCH_REQUIREMENT)
        except importlib.metadata.PackageNotFoundError:
            pass  # importable but not installed as a distribution (a source build): accept it
    missing += [req for req, module in SLICER_REQUIREMENTS if importlib.util.find_spec(module) is None]
    return missing


# --------------------------------------------------------------------------------------
# Training in a background process
# --------------------------------------------------------------------------------------

_EPOCH_RE = re.compile(r"\bepoch (\d+)/(\d+)\b")
_RESUME_RE = re.compile(r"\bresuming .* after epoch (\d+) of (\d+)\b")


def parse_training_progress(line: str) -> tuple[int, int] | None:
    """(epochs done, total) from a line of ``attrivae train --quiet`` output, else None."""
    match = _EPOCH_RE.search(line) or _RESUME_RE.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def training_command(manifest: str | os.PathLike, out: str | os.PathLike, *, preset: str = "fast_cpu",
                     epochs: int | None = None, device: str = "auto", python: str | None = None) -> list[str]:
    """The ``python -m AttriVAELib.cli train ... --quiet`` command line, after checking its inputs.

    Raises:
        ConfigError: missing manifest, an output folder that already holds files, an unknown
            preset or device, fewer than one epoch.
    """
    from AttriVAELib.train.presets import PRESETS

    manifest = Path(manifest) if str(manifest).strip() not in ("", ".") else None
    if manifest is None:
        raise ConfigError("no training manifest selected (a manifest.csv or the folder holding it)")
    if not (manifest.is_file() or (manifest / "manifest.csv").is_file()):
        raise ConfigError(f"{manifest}: no manifest found (give a manifest CSV or a folder holding manifest.csv)")
    if str(out).strip() in ("", "."):
        raise ConfigError("no output folder selected for the trained model")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not empty; choose a new output folder")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if device not in DEVICE_CHOICES and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"unknown device {device!r}; use {', '.join(DEVICE_CHOICES)} or cuda:N")
    command = [python or sys.executable, "-m", "AttriVAELib.cli", "train", "--data", str(manifest),
               "--out", str(out), "--preset", preset, "--device", device, "--quiet"]
    if epochs is not None:
        if int(epochs) < 1:
            raise ConfigError(f"epochs must be at least 1 (got {epochs})")
        command += ["--epochs", str(int(epochs))]
    return command


def training_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the training process: AttriVAELib importable, unbuffered output."""
    env = dict(os.environ if base is None else base)
    lib_parent = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([lib_parent] + [p for p in paths if p != lib_parent])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TrainingProcess:
    """A child process whose merged stdout/stderr a reader thread queues line by line.

    The GUI calls :meth:`poll` from a timer on the main thread (never blocking), shows
    :attr:`progress` and the new lines, and :meth:`cancel` stops the process (and the workers
    it started: it runs in its own process group).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        elif hasattr(subprocess, "CREATE_NEW_PROCESS_GROUP"):
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.command = [str(c) for c in command]
        try:
            self._process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                env=None if env is None else dict(env), cwd=None if cwd is None else str(cwd), **kwargs)
        except OSError as exc:
            raise ConfigError(f"cannot start the training process ({self.command[0]}): {exc.strerror or exc}") \
                from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="AttriVAE training output", daemon=True)
        self._reader.start()
        self._eof = False
        self.cancelled = False
        self.progress: tuple[int, int] | None = None
        self.log: list[str] = []

    def _read(self) -> None:
        stream = self._process.stdout
        try:
            for line in iter(stream.readline, ""):
                self._lines.put(line.rstrip("\r\n"))
        finally:
            stream.close()
            self._lines.put(None)

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> list[str]:
        """New output lines since the last call (never blocks); updates :attr:`progress`."""
        new: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                continue
            new.append(line)
            found = parse_training_progress(line)
            if found is not None:
                self.progress = found
        self.log += new
        return new

    @property
    def running(self) -> bool:
        """True until the process has exited and all of its output was read by :meth:`poll`."""
        return self._process.poll() is None or not self._eof or not self._lines.empty()

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self._process.wait(timeout)
        self._reader.join(timeout)
        return code

    def cancel(self, grace: float = 5.0) -> None:
        """Ask the process (group) to stop; kill it if it is still running after ``grace`` s."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM if os.name == "posix" else None)
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL if os.name == "posix" else None, kill=True)
            self._process.wait(grace)

    def _signal(self, sig: int | None, kill: bool = False) -> None:
        try:
            if os.name == "posix" and sig is not None:
                os.killpg(self._process.pid, sig)  # its own group (start_new_session)
            elif kill:
                self._process.kill()
            else:
                self._process.terminate()
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------------------
# The interactive session
# --------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class AttriVAESession:
    """A loaded model, an input volume node, its encoding and the current latent vector.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer).
        demo_dir: folder of the demo model (default: :func:`demo_model_dir`).

    Attributes:
        model: the :class:`~AttriVAELib.inference.model.AttriVAEModel` (None before :meth:`load_model`).
        input_node, mask_node: the encoded volume node and the mask node used.
        encoding: the :class:`~AttriVAELib.inference.model.Encoding` of the input.
        latent: (L,) float32 latent vector shown in the reconstruction (sliders edit it).
        reconstruction_node: the "AttriVAE reconstruction" node (decode of :attr:`latent`).
        heatmaps: name → heatmap node from the last :meth:`attention`.
        traversal_browser: the sequence browser of the last :meth:`traversal`.
        messages: notes for the user (e.g. a CPU fallback), newest last.
    """

    def __init__(self, scene, *, demo_dir: str | os.PathLike | None = None) -> None:
        if scene is None:
            raise InputError("no MRML scene given")
        self.scene = scene
        self.demo_dir = None if demo_dir is None else Path(demo_dir)
        self.model = None
        self.model_location: str | None = None
        self.device_request = "auto"
        self.fallback_to_cpu = False
        self.input_node = None
        self.mask_node = None
        self.encoding = None
        self.latent: np.ndarray | None = None
        self.reconstruction_node = None
        self.traversal_browser = None
        self.heatmaps: dict[str, Any] = {}
        self.heatmap_signed = False
        self.last_counterfactual: dict[str, Any] | None = None
        self.messages: list[str] = []
        self._class_stats = None

    # ------------------------------------------------------------------ model
    def load_model(self, location: str | os.PathLike = "demo", device: str = "auto", *,
                   fallback_to_cpu: bool = False, expected_input_size: int | None = None) -> str:
        """Load a checkpoint: ``"demo"``, a run folder or a ``model.safetensors`` file.

        Args:
            device: ``"auto"`` (a CUDA GPU if there is one, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
            fallback_to_cpu: when the GPU runs out of memory (loading or later), reload on the
                CPU and continue instead of failing.
            expected_input_size: if given, the model's input cube must be this size.

        Returns:
            A one-line description of the model (size, latent, attributes, device).

        Raises:
            CheckpointError: missing demo model, missing/tampered/incompatible checkpoint.
            ConfigError: the device is not available (e.g. CUDA requested without a GPU).
        """
        from AttriVAELib.inference.model import AttriVAEModel

        text = str(location).strip()
        if text in ("", "."):
            raise CheckpointError("no model selected (choose a run folder or a model.safetensors file)")
        path = find_demo_model(self.demo_dir) if text.lower() == "demo" else Path(text).expanduser()
        device = (device or "auto").strip().lower()
        self.fallback_to_cpu = bool(fallback_to_cpu)
        model = self._guard("loading the model", lambda: AttriVAEModel.load(path, device=device),
                            retry=lambda: AttriVAEModel.load(path, device="cpu"))
        if expected_input_size is not None and model.input_size != int(expected_input_size):
            raise CheckpointError(f"{model.source}: model input size {model.input_size}³ differs from the "
                                  f"expected {int(expected_input_size)}³")
        self.model = model
        self.model_location = "demo" if text.lower() == "demo" else str(path)
        self.device_request = device
        self._class_stats = None
        self.encoding = self.latent = None
        self.heatmaps = {}
        return model.describe()

    def _require_model(self):
        if self.model is None:
            raise ConfigError("no model loaded; load the demo model or a trained model first")
        return self.model

    def _require_encoding(self):
        self._require_model()
        if self.encoding is None or self.latent is None:
            raise ConfigError("no image encoded yet; select an input volume and press Encode")
        return self.encoding

    def _guard(self, what: str, func: Callable[[], Any], retry: Callable[[], Any] | None = None) -> Any:
        """Run ``func``; on CUDA out-of-memory fall back to the CPU (if allowed) or raise ConfigError."""
        import torch

        try:
            return func()
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not self.fallback_to_cpu:
                raise ConfigError(f"out of GPU memory while {what}; select device 'cpu' or allow the CPU "
                                  "fallback") from None
        self.messages.append(f"out of GPU memory while {what}: continuing on the CPU")
        if retry is not None:
            return retry()
        self._move_to_cpu()
        return func()

    def _move_to_cpu(self) -> None:
        from AttriVAELib.inference.model import AttriVAEModel

        model = self._require_model()
        if model.source is None:
            raise ConfigError("out of GPU memory and the model cannot be reloaded on the CPU (no checkpoint file)")
        self.model = AttriVAEModel.load(model.source, device="cpu")

    # ------------------------------------------------------------------ encode
    def encode(self, input_node, mask_node=None) -> dict[str, Any]:
        """Encode a scalar volume node (optionally with a labelmap or segmentation mask).

        Resets the latent vector to μ and updates the reconstruction node.

        Returns:
            :meth:`summary` of the encoding.

        Raises:
            InputError: no volume, a 2D or 4D/vector volume, NaN voxels, an empty mask or one
                that does not overlap the volume.
        """
        self._require_model()
        volume = mrml.volume_from_node(input_node)
        mask = None
        if mask_node is not None:
            mask = mrml.segmentation_or_labelmap_mask(self.scene, mask_node, input_node)
        encoding = self._guard("encoding", lambda: self.model.encode(volume, mask))
        self.input_node, self.mask_node = input_node, mask_node
        self.encoding = encoding
        self.latent = np.array(encoding.mu, dtype=np.float32)
        self.heatmaps = {}
        self.last_counterfactual = None
        self.update_reconstruction()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The encoding and the current latent vector, ready for display.

        Keys: ``model`` (description), ``probabilities`` ({label: p} or None),
        ``predicted_label``, ``attributes`` (one dict per regularized dim: ``name``,
        ``unit``, ``estimate`` of the encoded image, ``current`` estimate for the current
        latent, ``range`` of the calibration in physical units), ``dims`` (one dict per latent
        dim: ``dim``, ``name``, ``unit``, ``regularized``, ``mu``, ``value``, ``min``, ``max``,
        ``step``, ``label``).
        """
        enc = self._require_encoding()
        model = self.model
        ranges = self.slider_ranges()
        current = model.predict_attributes(self.latent)
        attributes = []
        for k, name in enumerate(model.attribute_names):
            value_range = model.calibration.value_range(k) if model.calibration is not None else None
            attributes.append({
                "dim": k, "name": name, "unit": model.attribute_units[k],
                "estimate": None if enc.attributes is None else float(enc.attributes[k]),
                "current": None if current is None else float(current[k]),
                "range": value_range,
            })
        dims = []
        for d in range(model.latent_size):
            lo, hi = ranges[d]
            dims.append({
                "dim": d, "name": self.dim_name(d), "unit": self.dim_unit(d), "regularized": d < model.num_regularized,
                "mu": float(enc.mu[d]), "value": float(self.latent[d]), "min": lo, "max": hi,
                "step": (hi - lo) / 200.0, "label": self.dim_label(d, float(self.latent[d])),
            })
        out: dict[str, Any] = {"model": model.describe(), "attributes": attributes, "dims": dims,
                               "probabilities": None, "predicted_label": None}
        probs = model.class_probabilities(self.latent)
        if probs is not None:
            names = model.label_names or [str(i) for i in range(len(probs))]
            out["probabilities"] = {str(n): float(p) for n, p in zip(names, probs)}
            out["predicted_label"] = str(names[int(np.argmax(probs))])
            out["encoded_probabilities"] = {str(n): float(p) for n, p in zip(names, enc.probabilities)}
        return out

    def dim_name(self, dim: int) -> str:
        model = self._require_model()
        return model.attribute_names[dim] if dim < model.num_regularized else f"dim {dim}"

    def dim_unit(self, dim: int) -> str:
        model = self._require_model()
        return model.attribute_units[dim] if dim < model.num_regularized else ""

    def dim_label(self, dim: int, value: float) -> str:
        """Slider label ``"name (unit): value"``: the calibrated attribute value of latent ``value``
        for a regularized dim (its latent value when there is no calibration), the latent value
        for a free dim."""
        model = self._require_model()
        name, unit = self.dim_name(dim), self.dim_unit(dim)
        if dim < model.num_regularized and model.calibration is not None:
            z = np.zeros(model.latent_size, dtype=np.float64)
            z[dim] = value
            estimate = float(model.predict_attributes(z)[dim])
            return f"{name} ({unit}): {_fmt(estimate)}" if unit else f"{name}: {_fmt(estimate)}"
        return f"{name} (latent): {value:+.3f}"

    def slider_ranges(self) -> list[tuple[float, float]]:
        """(min, max) latent range per dim: the training spread of μ, widened by 10 % each side.

        Regularized dims: the calibration knots (fitted on the training split's μ). Free dims:
        mean ± 3 SD of the training split's class statistics when they are cached with the
        model, else ± 3 (the prior); at least ± 0.5 around the centre. The encoded value is
        always inside the range.
        """
        model = self._require_model()
        n = model.latent_size
        lo = np.full(n, -3.0)
        hi = np.full(n, 3.0)
        stats = self._cached_class_statistics()
        if stats is not None:
            weights = np.asarray(stats.counts, dtype=np.float64)[:, None]
            mean = (stats.means * weights).sum(0) / weights.sum()
            var = ((stats.stds ** 2 + (stats.means - mean) ** 2) * weights).sum(0) / weights.sum()
            sd = np.sqrt(np.maximum(var, 1e-12))
            lo, hi = mean - 3 * sd, mean + 3 * sd
        if model.calibration is not None:
            for k in range(model.num_regularized):
                knots = model.calibration.knots_latent[k]
                if len(knots) and np.ptp(knots) > 0:
                    lo[k], hi[k] = float(np.min(knots)), float(np.max(knots))
        # A collapsed dim (μ nearly constant over the data) still gets a usable slider.
        centre = (lo + hi) / 2
        lo, hi = np.minimum(lo, centre - MIN_SLIDER_HALF_WIDTH), np.maximum(hi, centre + MIN_SLIDER_HALF_WIDTH)
        span = hi - lo
        lo, hi = lo - SLIDER_MARGIN * span, hi + SLIDER_MARGIN * span
        if self.encoding is not None:
            mu = np.asarray(self.encoding.mu, dtype=np.float64)
            lo, hi = np.minimum(lo, mu), np.maximum(hi, mu)
        return [(float(a), float(b)) for a, b in zip(lo, hi)]

    def _cached_class_statistics(self):
        """Class statistics of the training split stored with the model, else None.

        From the checkpoint metadata or a ``class_statistics.json`` cache next to it written for
        these weights (same SHA-256). Never computes them: that would read the training set.
        """
        import json

        from AttriVAELib.nn.calibration import ClassStatistics

        model = self._require_model()
        if self._class_stats is None:
            self._class_stats = False
            try:
                if not model.has_classifier:
                    pass
                elif isinstance(model.meta.get("class_statistics"), Mapping):
                    self._class_stats = ClassStatistics.from_dict(model.meta["class_statistics"])
                elif model.source is not None and (model.source.parent / "class_statistics.json").is_file():
                    digest = json.loads(model.source.with_suffix(".json").read_text()).get("sha256")
                    saved = json.loads((model.source.parent / "class_statistics.json").read_text())
                    if digest and saved.get("weights_sha256") == digest and isinstance(saved.get("train"), Mapping):
                        self._class_stats = ClassStatistics.from_dict(saved["train"])
            except (OSError, ValueError, KeyError, TypeError):
                self._class_stats = False
        return self._class_stats or None

    # ------------------------------------------------------------------ latent edits
    def set_latent(self, dim: int | str, value: float, *, units: str = "latent", preview: bool = True):
        """Set one latent dim (index or attribute name) and update the reconstruction node; return it.

        ``units="attribute"``: ``value`` is in the attribute's physical unit (calibrated).
        """
        return self.set_latents({dim: value}, units=units, preview=preview)

    def set_latents(self, values: Mapping[int | str, float], *, units: str = "latent", preview: bool = True):
        """Set several latent dims at once and decode once; return the reconstruction node."""
        model = self._require_model()
        self._require_encoding()
        z = self.latent.copy()
        for dim, value in values.items():
            if value is None or not math.isfinite(float(value)):
                raise ConfigError(f"latent value for {dim!r} must be a finite number")
            k = model.dim_index(dim)
            z[k] = float(model.latent_values(k, [float(value)], units)[0])
        self.latent = z
        return self.update_reconstruction(preview=preview)

    def reset(self):
        """Latent vector back to the encoding's μ; return the reconstruction node."""
        enc = self._require_encoding()
        self.latent = np.array(enc.mu, dtype=np.float32)
        return self.update_reconstruction(preview=False)

    def _decode(self, z: np.ndarray, preview: bool) -> np.ndarray:
        """Decode latents; ``preview`` uses bf16 only where it is native and faster (the model decides)."""
        return self._guard("decoding", lambda: self.model.decode(z, preview=bool(preview)))

    def update_reconstruction(self, *, preview: bool = False):
        """Decode the current latent vector into the persistent reconstruction node; return it."""
        enc = self._require_encoding()
        recon = self._decode(self.latent[None], preview)[0]
        volume = self.model.to_input_grid(recon, enc, rescale=True)
        node = mrml.update_volume_node(self.scene, volume, NODE_NAMES["reconstruction"], reference=self.input_node,
                                       role="reconstruction")
        self._match_window(node)
        self.reconstruction_node = node
        return node

    def _match_window(self, node) -> None:
        """Show the reconstruction with the input's window/level (same intensity scale)."""
        source = self.input_node.GetDisplayNode() if self.input_node is not None else None
        display = node.GetDisplayNode()
        if source is None or display is None or not source.IsA("vtkMRMLScalarVolumeDisplayNode"):
            return
        if source.GetWindow() > 0:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(source.GetWindow(), source.GetLevel())

    # ------------------------------------------------------------------ attention
    def attention(self, layer: str = "auto", relu: bool = True, *, colormap: str | None = None,
                  threshold: float = 0.2, opacity: float = 0.5, show: str | None = None) -> dict[str, Any]:
        """Attribute-wise (and classifier) Grad-CAM of the encoded image as heatmap nodes.

        One persistent node per attribute (``"AttriVAE attention: <name>"``) plus
        ``"classifier"`` when the model has one, on the input's grid. ReLU maps are in
        [0, 1] (colour table Inferno, window [0, 1], values below ``threshold`` transparent);
        signed maps (``relu=False``) are in [-1, 1] (ColdToHotRainbow centred at 0). The map
        ``show`` (default: the first) is put in the slice views' foreground at ``opacity``.

        Returns:
            name → heatmap node.
        """
        from AttriVAELib.explain.explain import explain_encoding

        model = self._require_model()
        enc = self._require_encoding()
        explanation = self._guard(
            "computing attention maps",
            lambda: explain_encoding(self.model, enc, layer=layer, relu=relu, counterfactual=False))
        maps = dict(explanation.attribute_maps)
        if explanation.classifier_map is not None:
            maps["classifier"] = explanation.classifier_map
        if not maps:
            raise ConfigError("this model has neither regularized attributes nor a classifier: nothing to explain")
        self.heatmaps = {}
        self.heatmap_signed = not relu
        for name, array in maps.items():
            volume = model.to_input_grid(np.asarray(array, dtype=np.float32), enc)
            node = mrml.update_volume_node(self.scene, volume, f"{NODE_NAMES['heatmap']}: {name}",
                                           reference=self.input_node, role=f"heatmap:{name}")
            self.heatmaps[name] = node
            self._style_heatmap(node, colormap, threshold, opacity)
        self.show_heatmap(show or next(iter(self.heatmaps)), opacity=opacity)
        return dict(self.heatmaps)

    def _style_heatmap(self, node, colormap: str | None, threshold: float | None, opacity: float | None) -> None:
        if self.heatmap_signed:
            table = mrml.ensure_colormap(self.scene, colormap or "ColdToHotRainbow")
            mrml.set_signed_heatmap_display(node, table, 1.0, opacity)
        else:
            table = mrml.ensure_colormap(self.scene, colormap or "Inferno")
            mrml.set_heatmap_display(node, table, (0.0, 1.0), threshold, opacity)

    def show_heatmap(self, name: str, *, opacity: float | None = None, threshold: float | None = None,
                     colormap: str | None = None):
        """Show heatmap ``name`` over the input in the slice views; restyle it if asked; return its node."""
        if name not in self.heatmaps:
            known = ", ".join(self.heatmaps) or "none (compute the attention maps first)"
            raise ConfigError(f"no attention map named {name!r}; available: {known}")
        node = self.heatmaps[name]
        if threshold is not None or colormap is not None or opacity is not None:
            display = node.GetDisplayNode()
            current_threshold = display.GetLowerThreshold() if display.GetApplyThreshold() else None
            self._style_heatmap(node, colormap, current_threshold if threshold is None else threshold, opacity)
        mrml.show_overlay(self.scene, background=self.input_node, foreground=node, opacity=opacity)
        return node

    # ------------------------------------------------------------------ counterfactual
    def counterfactual(self, mode: str | tuple = "other_class", *, method: str = "auto", opacity: float = 0.5):
        """A counterfactual of the encoded image and its signed difference to the reconstruction.

        Args:
            mode: ``"other_class"`` (move the class-relevant dims towards the other class) or
                ``("attribute", name, value)`` (set one attribute to ``value`` in its unit).
            method: for ``"other_class"``: ``"class_mean"``, ``"flip"`` or ``"auto"`` (the class
                mean when class statistics are stored with the model, else ``"flip"``, which
                needs no training data).

        Returns:
            The difference node (counterfactual − reconstruction, ColdToHotRainbow centred at
            0); :attr:`last_counterfactual` holds the summary (moved dims, probabilities).
        """
        from AttriVAELib.explain.counterfactual import counterfactual as make_counterfactual

        model = self._require_model()
        enc = self._require_encoding()
        if isinstance(mode, str) and mode == "other_class":
            stats = self._cached_class_statistics() if method in ("auto", "class_mean") else None
            how = "flip" if method == "auto" and stats is None else method
            kwargs: dict[str, Any] = {"method": how, "stats": stats or None}
        elif isinstance(mode, (tuple, list)) and len(mode) == 3 and mode[0] == "attribute":
            _, name, value = mode
            if value is None or not math.isfinite(float(value)):
                raise ConfigError("the counterfactual attribute value must be a finite number")
            kwargs = {"values": {name: float(value)}, "units": "attribute"}
        else:
            raise ConfigError(f"counterfactual mode must be 'other_class' or ('attribute', name, value); got {mode!r}")
        result = self._guard("computing the counterfactual",
                             lambda: make_counterfactual(self.model, enc, **kwargs))
        counter = model.to_input_grid(result.counterfactual, enc, rescale=True)
        mrml.update_volume_node(self.scene, counter, NODE_NAMES["counterfactual"], reference=self.input_node,
                                role="counterfactual")
        difference = model.to_input_grid(result.difference, enc, rescale=False)
        node = mrml.update_volume_node(self.scene, difference, NODE_NAMES["difference"], reference=self.input_node,
                                       role="difference")
        peak = float(np.abs(difference.array).max())
        table = mrml.ensure_colormap(self.scene, "ColdToHotRainbow")
        mrml.set_signed_heatmap_display(node, table, peak if peak > 0 else 1.0, opacity)
        mrml.show_overlay(self.scene, background=self.input_node, foreground=node, opacity=opacity)
        self.last_counterfactual = result.summary(model)
        return node

    # ------------------------------------------------------------------ traversal
    def traversal(self, dim: int | str, lo: float, hi: float, steps: int, *, units: str = "latent"):
        """Decode the current latent with dim ``dim`` swept from ``lo`` to ``hi`` in ``steps`` steps.

        The volumes (on the input grid) go into the sequence ``"AttriVAE traversal"``, indexed by
        the requested values (named after the attribute, with its unit for
        ``units="attribute"``); calling again refills the same sequence. A sequence browser to play
        it is kept in :attr:`traversal_browser` (None where the Sequences classes are missing).

        Returns:
            The sequence node.
        """
        model = self._require_model()
        enc = self._require_encoding()
        steps = int(steps)
        if not 1 <= steps <= MAX_TRAVERSAL_STEPS:
            raise ConfigError(f"traversal steps must be between 1 and {MAX_TRAVERSAL_STEPS} (got {steps})")
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise ConfigError("traversal range values must be finite numbers")
        if steps > 1 and float(lo) == float(hi):
            raise ConfigError("the traversal range is empty (from = to); widen it or use one step")
        k = model.dim_index(dim)
        values = np.linspace(float(lo), float(hi), steps)
        z = model.traversal_latents(self.latent, k, values, units=units)
        frames = self._decode(z, preview=False)
        volumes = [model.to_input_grid(frames[s], enc, rescale=True) for s in range(steps)]
        unit = self.dim_unit(k) if units == "attribute" else "latent"
        sequence, self.traversal_browser = mrml.traversal_sequence(
            self.scene, volumes, [float(v) for v in values], NODE_NAMES["traversal"], attribute=self.dim_name(k),
            unit=unit, reference=self.input_node)
        return sequence

    # ------------------------------------------------------------------ scene persistence
    def save_state(self, extra: Mapping[str, Any] | None = None):
        """Store the session (model, device, nodes, latent vector) with the scene; return the node."""
        state: dict[str, Any] = {
            "model": self.model_location, "device": self.device_request, "fallback_to_cpu": self.fallback_to_cpu,
            "input_node": None if self.input_node is None else self.input_node.GetID(),
            "mask_node": None if self.mask_node is None else self.mask_node.GetID(),
            "latent": None if self.latent is None else [float(v) for v in self.latent],
        }
        state.update(extra or {})
        return mrml.save_parameters(self.scene, state)

    def restore_state(self) -> dict[str, Any]:
        """Reload the model, re-encode the input and restore the latent vector saved by :meth:`save_state`.

        Returns:
            The saved parameters (``{}`` if none).
        """
        state = mrml.load_parameters(self.scene)
        if not state or not state.get("model"):
            return state
        self.load_model(state["model"], state.get("device") or "auto",
                        fallback_to_cpu=bool(state.get("fallback_to_cpu")))
        node_id = state.get("input_node")
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is None:
            return state
        mask_id = state.get("mask_node")
        mask = self.scene.GetNodeByID(mask_id) if mask_id else None
        self.encode(node, mask)
        latent = state.get("latent")
        if latent is not None and len(latent) == self.model.latent_size:
            self.set_latents(dict(enumerate(float(v) for v in latent)), preview=False)
        return state
