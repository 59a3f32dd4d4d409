"""The GUI-free side of the 3D Slicer module: an interactive session on an MRML scene.

``AttriVAE/AttriVAE.py`` (the Qt panel) delegates to :class:`AttriVAESession`; everything the
panel does is scriptable from Slicer's Python console and testable against a bare
``slicer.vtkMRMLScene()`` from the ``slicer-core`` wheel. One job per module:

* :mod:`~AttriVAELib.slicer.session`: :class:`AttriVAESession` (model, input, encoding, latent
  vector, scene persistence) and the read-only views the panel uses;
* :mod:`~AttriVAELib.slicer.explanations`: attention maps, counterfactuals, traversals;
* :mod:`~AttriVAELib.slicer.latent_space`: latent dims on screen (names, slider ranges, labels);
* :mod:`~AttriVAELib.slicer.panel`: the panel's values and texts (:class:`SliderSpec`, ...);
* :mod:`~AttriVAELib.slicer.outputs`: the persistent output nodes and their display;
* :mod:`~AttriVAELib.slicer.mrml`: the MRML bridge (geometry, volumes, masks, colours,
  sequences, parameters);
* :mod:`~AttriVAELib.slicer.demo_model`, :mod:`~AttriVAELib.slicer.requirements`,
  :mod:`~AttriVAELib.slicer.training_process`: the shipped demo model, the Python packages to
  install inside Slicer, training in a background process.

Slicer imports the module before torch is installed, so importing this package imports
neither torch nor ``slicer``/``vtk``/``qt``: public names are imported on first use
(:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "AttriVAESession": "AttriVAELib.slicer.session",
    "ExplanationsMixin": "AttriVAELib.slicer.explanations",
    "MAX_TRAVERSAL_STEPS": "AttriVAELib.slicer.explanations",
    "NODE_NAMES": "AttriVAELib.slicer.outputs",
    "SliderSpec": "AttriVAELib.slicer.panel",
    "DEMO_MODEL_ENV": "AttriVAELib.slicer.demo_model",
    "demo_model_dir": "AttriVAELib.slicer.demo_model",
    "find_demo_model": "AttriVAELib.slicer.demo_model",
    "SLICER_REQUIREMENTS": "AttriVAELib.slicer.requirements",
    "TORCH_REQUIREMENT": "AttriVAELib.slicer.requirements",
    "missing_requirements": "AttriVAELib.slicer.requirements",
    "DEVICE_CHOICES": "AttriVAELib.slicer.training_process",
    "TrainingProcess": "AttriVAELib.slicer.training_process",
    "parse_training_progress": "AttriVAELib.slicer.training_process",
    "training_command": "AttriVAELib.slicer.training_process",
    "training_environment": "AttriVAELib.slicer.training_process",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
