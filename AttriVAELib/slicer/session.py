"""One interactive AttriVAE session on an MRML scene: the GUI-free logic of the Slicer module.

The module's ``AttriVAELogic`` delegates here, so everything the user can do from the panel
is also scriptable from Slicer's Python console and testable against a bare
``slicer.vtkMRMLScene()`` from the ``slicer-core`` wheel::

    from AttriVAELib.slicer import AttriVAESession
    session = AttriVAESession(slicer.mrmlScene)
    session.load_model("demo")                          # or a run folder / model.safetensors
    summary = session.encode(volumeNode)                # probabilities, attributes, slider ranges
    recon = session.set_latent(0, summary["dims"][0]["max"])   # ONE "AttriVAE reconstruction" node
    maps = session.attention()                          # name -> heatmap node (Inferno, [0, 1])
    diff = session.counterfactual("other_class")        # signed difference node
    sequence = session.traversal(0, -2, 2, 9)          # a Sequences-module traversal (+ browser)
    session.save_state()                                # settings + latent saved with the scene

The panel uses only the public methods and read-only properties (``has_encoding``,
``slider_specs()``, ``summary_lines()``, ``pop_messages()``, ...), never ``session.model.…``. Rules:

* No Qt here, and ``slicer``/``vtk``/``torch`` are imported inside functions (through
  :mod:`AttriVAELib.slicer.mrml` for MRML), so this module imports before the dependencies are
  installed. Call it from the main thread only (MRML is not thread-safe). Long work has a
  ``*_task`` form (:meth:`encode_task`, :meth:`attention_task`, ...): a
  :class:`~AttriVAELib.slicer.tasks.Task` whose torch part runs in a worker thread and whose MRML
  updates run on the main thread in small steps; start it with :meth:`start` and call
  :meth:`process_tasks` from a timer (:class:`~AttriVAELib.slicer.tasks.TaskHostMixin`). The
  plain methods run the same task in the calling thread.
  Training runs in a separate process (:class:`~AttriVAELib.slicer.training_process.TrainingProcess`).
* Here: the state (model, input, encoding, latent vector), latent edits, persistence. Attention,
  counterfactuals, traversals: :mod:`~AttriVAELib.slicer.explanations`; latent dims on screen:
  :mod:`~AttriVAELib.slicer.latent_space`; the panel's texts: :mod:`~AttriVAELib.slicer.panel`;
  output nodes (input grid, one node per name and role, reused): :mod:`~AttriVAELib.slicer.outputs`.
* Errors a user can cause raise :class:`~AttriVAELib.core.errors.AttriVAEError` subclasses with a
  one-line message: no/2D/4D volume, a mask that does not overlap, a missing demo model, a
  tampered or incompatible checkpoint, a missing GPU, running out of GPU memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from AttriVAELib.core.errors import CheckpointError, ConfigError, InputError
from AttriVAELib.slicer import gridding, latent_space, mrml, outputs
from AttriVAELib.slicer.demo_model import find_demo_model
from AttriVAELib.slicer.explanations import ExplanationsMixin
from AttriVAELib.slicer.mrml.volumes import checked_copy
from AttriVAELib.slicer.panel import PanelViewsMixin
from AttriVAELib.slicer.persistence import PersistenceMixin
from AttriVAELib.slicer.tasks import Task, TaskHostMixin, warm_up

__all__ = ["AttriVAESession"]


class AttriVAESession(ExplanationsMixin, PanelViewsMixin, PersistenceMixin, TaskHostMixin):
    """A loaded model, an input volume node, its encoding and the current latent vector.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer).
        demo_dir: folder of the demo model (default: :func:`~AttriVAELib.slicer.demo_model.demo_model_dir`).

    Attributes (for scripting; the panel uses the methods and properties):
        model: the :class:`~AttriVAELib.inference.model.AttriVAEModel` (None before :meth:`load_model`).
        encoding: the :class:`~AttriVAELib.inference.model.Encoding` of the input.
        latent: (L,) float32 latent vector shown in the reconstruction (sliders edit it).
        reconstruction_node: the "AttriVAE reconstruction" node (decode of :attr:`latent`).
        heatmaps: name → heatmap node from the last :meth:`attention`.
        last_counterfactual: the summary of the last :meth:`counterfactual`.
        messages: notes for the user (e.g. a CPU fallback), newest last (see :meth:`pop_messages`).
    """

    def __init__(self, scene, *, demo_dir: str | os.PathLike | None = None) -> None:
        if scene is None:
            raise InputError("no MRML scene given")
        self._scene = scene
        self.demo_dir = None if demo_dir is None else Path(demo_dir)
        self.model = None
        self.model_location: str | None = None
        self.device_request = "auto"
        self.fallback_to_cpu = False
        self._input_node = None
        self._mask_node = None
        self.encoding = None
        self.latent: np.ndarray | None = None
        self.reconstruction_node = None
        self._traversal_browser = None
        self.heatmaps: dict[str, Any] = {}
        self._heatmap_signed = False
        self.last_counterfactual: dict[str, Any] | None = None
        self.messages: list[str] = []
        self._class_stats = None

    # ------------------------------------------------------------------ read-only state
    @property
    def scene(self):
        """The MRML scene the session writes into."""
        return self._scene

    @property
    def input_node(self):
        """The encoded volume node (None before :meth:`encode`)."""
        return self._input_node

    @property
    def mask_node(self):
        """The mask node used by the last :meth:`encode` (None without one)."""
        return self._mask_node

    @property
    def traversal_browser(self):
        """The sequence browser of the last :meth:`traversal` (None before, or without Sequences)."""
        return self._traversal_browser

    @property
    def heatmap_signed(self) -> bool:
        """Whether the last :meth:`attention` made signed maps (``relu=False``)."""
        return self._heatmap_signed

    @property
    def has_model(self) -> bool:
        """A model is loaded."""
        return self.model is not None

    @property
    def has_encoding(self) -> bool:
        """A model is loaded and an image is encoded (the latent tools can run)."""
        return self.model is not None and self.encoding is not None and self.latent is not None

    @property
    def latent_size(self) -> int:
        """L, the number of latent dims (0 without a model)."""
        return 0 if self.model is None else int(self.model.latent_size)

    @property
    def model_description(self) -> str:
        """One line about the loaded model (size, latent, attributes, device); ``""`` without one."""
        return "" if self.model is None else self.model.describe()

    @property
    def heatmap_names(self) -> list[str]:
        """Names of the attention maps of the last :meth:`attention` (attributes, then ``"classifier"``)."""
        return list(self.heatmaps)

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
        return self.load_model_task(location, device, fallback_to_cpu=fallback_to_cpu,
                                    expected_input_size=expected_input_size).run_here()

    def load_model_task(self, location: str | os.PathLike = "demo", device: str = "auto", *,
                        fallback_to_cpu: bool = False, expected_input_size: int | None = None) -> Task:
        """:meth:`load_model` as a task (loading and the one-time warm-up in the worker)."""
        from AttriVAELib.inference.model import AttriVAEModel

        text = str(location).strip()
        if text in ("", "."):
            raise CheckpointError("no model selected (choose a run folder or a model.safetensors file)")
        path = find_demo_model(self.demo_dir) if text.lower() == "demo" else Path(text).expanduser()
        device = (device or "auto").strip().lower()
        self.fallback_to_cpu = bool(fallback_to_cpu)

        def work(task: Task):
            task.report(0.0, "loading the model")
            model = self._guard("loading the model", lambda: AttriVAEModel.load(path, device=device),
                                retry=lambda: AttriVAEModel.load(path, device="cpu"))
            if expected_input_size is not None and model.input_size != int(expected_input_size):
                raise CheckpointError(f"{model.source}: model input size {model.input_size}³ differs from the "
                                      f"expected {int(expected_input_size)}³")
            task.report(0.6, "preparing the model")
            warm_up(model)
            return model

        def apply(model):
            self.model = model
            self.model_location = "demo" if text.lower() == "demo" else str(path)
            self.device_request = device
            self._class_stats = None
            self.encoding = self.latent = None
            self.heatmaps = {}
            return model.describe()

        return Task("Loading the model", work, apply)

    def is_loaded(self, location: str | os.PathLike, device: str = "auto") -> bool:
        """Whether the model at ``location`` (``"demo"``, a folder or a file) is loaded for ``device``."""
        text = str(location).strip()
        where = "demo" if text.lower() == "demo" else str(Path(text).expanduser())
        wanted = (where, (device or "auto").strip().lower())
        return self.model is not None and wanted == (self.model_location, self.device_request)

    def set_cpu_fallback(self, enabled: bool) -> None:
        """Reload on the CPU and continue when the GPU runs out of memory (instead of failing)."""
        self.fallback_to_cpu = bool(enabled)

    def pop_messages(self) -> list[str]:
        """The notes for the user gathered since the last call (oldest first), and forget them."""
        messages, self.messages = list(self.messages), []
        return messages

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
        return self.encode_task(input_node, mask_node).run_here()

    def encode_task(self, input_node, mask_node=None) -> Task:
        """:meth:`encode` as a task: copy, encode, decode and resample in the worker; write the node after."""
        self._require_model()
        view = mrml.volume_from_node(input_node, copy=False)  # checks the node; the copy is made in the worker
        label = input_node.GetName() or input_node.GetID()
        mask = None
        if mask_node is not None:
            mask = mrml.segmentation_or_labelmap_mask(self.scene, mask_node, input_node)

        def work(task: Task):
            task.report(0.0, "reading the volume")
            volume = checked_copy(view, f"'{label}'", check=task.check)
            task.report(0.3, "encoding")
            encoding = self._guard("encoding", lambda: self.model.encode(volume, mask))
            task.report(0.5, "decoding")
            recon = self._decode(np.asarray(encoding.mu, dtype=np.float32)[None], False)[0]
            notes = list(encoding.notes) + self.model.read_back(recon, encoding.mu, "reconstruction").warnings
            task.report(0.6, "resampling onto the input grid")
            volume = gridding.to_input_grid(recon, encoding.mapping, rescale=True, check=task.check)
            return encoding, outputs.prepare(volume, task.check), notes

        def apply(result):
            encoding, reconstruction, notes = result
            self.messages.extend(notes)
            self._input_node, self._mask_node = input_node, mask_node
            self.encoding = encoding
            self.latent = np.array(encoding.mu, dtype=np.float32)
            self.heatmaps = {}
            self.last_counterfactual = None
            yield
            self.reconstruction_node = outputs.show_reconstruction(self.scene, reconstruction, self.input_node)
            return self.summary()

        return Task("Encoding", work, apply)

    def close_scene(self) -> None:
        """Forget the input, its encoding and the output nodes (the scene is closing); keep the model."""
        self._input_node = self._mask_node = self.encoding = self.latent = None
        self.reconstruction_node = self._traversal_browser = self.last_counterfactual = None
        self.heatmaps = {}

    def summary(self) -> dict[str, Any]:
        """The encoding and the current latent vector, ready for display.

        See :func:`AttriVAELib.slicer.latent_space.encoding_summary` for the keys.
        """
        enc = self._require_encoding()
        return latent_space.encoding_summary(self.model, enc, self.latent, self.slider_ranges())

    def dim_name(self, dim: int) -> str:
        """The attribute name of a regularized dim, ``"dim d"`` for a free one."""
        return latent_space.dim_name(self._require_model(), dim)

    def dim_unit(self, dim: int) -> str:
        """The attribute unit of a regularized dim, ``""`` for a free one."""
        return latent_space.dim_unit(self._require_model(), dim)

    def dim_label(self, dim: int, value: float) -> str:
        """Slider label ``"name (unit): value"`` of latent ``value`` (see :func:`latent_space.dim_label`)."""
        return latent_space.dim_label(self._require_model(), dim, value)

    def slider_ranges(self) -> list[tuple[float, float]]:
        """(min, max) latent range per dim, the encoded μ inside (see :mod:`AttriVAELib.slicer.latent_space`)."""
        model = self._require_model()
        mu = None if self.encoding is None else self.encoding.mu
        return latent_space.slider_ranges(model, self._class_statistics(), mu)

    def _class_statistics(self):
        """The training split's class statistics stored with the model (read once per model), else None."""
        if self._class_stats is None:
            self._class_stats = latent_space.stored_class_statistics(self._require_model()) or False
        return self._class_stats or None

    # ------------------------------------------------------------------ latent edits
    def set_latent(self, dim: int | str, value: float, *, units: str = "latent", preview: bool = True):
        """Set one latent dim (index or attribute name) and update the reconstruction node; return it.

        ``units="attribute"``: ``value`` is in the attribute's physical unit (calibrated).
        """
        return self.set_latents({dim: value}, units=units, preview=preview)

    def set_latents(self, values: Mapping[int | str, float], *, units: str = "latent", preview: bool = True):
        """Set several latent dims at once and decode once; return the reconstruction node."""
        return self.latents_task(values, units=units, preview=preview).run_here()

    def latents_task(self, values: Mapping[int | str, float], *, units: str = "latent", preview: bool = True) -> Task:
        """:meth:`set_latents` as a task (the latent vector changes when the node is written)."""
        model = self._require_model()
        self._require_encoding()
        z = self.latent.copy()
        for dim, value in values.items():
            if value is None or not math.isfinite(float(value)):
                raise ConfigError(f"latent value for {dim!r} must be a finite number")
            k = model.dim_index(dim)
            z[k] = float(model.latent_values(k, [float(value)], units)[0])
        return self.reconstruction_task(z, preview=preview)

    def reset(self):
        """Latent vector back to the encoding's μ; return the reconstruction node."""
        return self.reset_task().run_here()

    def reset_task(self) -> Task:
        """:meth:`reset` as a task."""
        enc = self._require_encoding()
        return self.reconstruction_task(np.array(enc.mu, dtype=np.float32), preview=False)

    def _decode(self, z: np.ndarray, preview: bool) -> np.ndarray:
        """Decode latents; ``preview`` uses bf16 only where it is native and faster (the model decides)."""
        return self._guard("decoding", lambda: self.model.decode(z, preview=bool(preview)))

    def _read_back_notes(self, image: np.ndarray, z: np.ndarray, enc) -> list[str]:
        """Warnings where the decoded ``image`` does not show the class or the moved attributes ``z`` says."""
        moved = [k for k in range(self.model.num_regularized) if abs(float(z[k]) - float(enc.mu[k])) > 1e-6]
        return self.model.read_back(image, z, "decoded image", moved).warnings

    def update_reconstruction(self, *, preview: bool = False):
        """Decode the current latent vector into the persistent reconstruction node; return it."""
        self._require_encoding()
        return self.reconstruction_task(self.latent.copy(), preview=preview).run_here()

    def reconstruction_task(self, latent: np.ndarray, *, preview: bool = False) -> Task:
        """Decode ``latent`` (L,) in the worker; make it the current latent vector and write the node after."""
        enc = self._require_encoding()
        z = np.array(latent, dtype=np.float32)

        def work(task: Task):
            task.report(0.0, "decoding")
            recon = self._decode(z[None], preview)[0]
            notes = [] if preview else self._read_back_notes(recon, z, enc)
            task.report(0.3, "resampling onto the input grid")
            volume = gridding.to_input_grid(recon, enc.mapping, rescale=True, check=task.check)
            return outputs.prepare(volume, task.check), notes

        def apply(result):
            volume, notes = result
            self.messages.extend(notes)
            self.latent = z
            self.reconstruction_node = outputs.show_reconstruction(self.scene, volume, self.input_node)
            return self.reconstruction_node

        return Task("Decoding", work, apply)

    def ensure_reconstruction(self):
        """The reconstruction node of the current latent vector, decoded if it is missing from the scene."""
        node = self.reconstruction_node
        if node is None or node.GetScene() is None:
            node = self.update_reconstruction()
        return node
