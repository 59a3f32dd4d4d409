"""AttriVAELib: the Attri-VAE engine behind the AttriVAE 3D Slicer extension.

The public API, imported on first use so that ``import AttriVAELib`` works without torch,
Slicer, Qt or a GPU (3D Slicer discovers the module before it installs torch)::

    from AttriVAELib import AttriVAEModel, AttributeGradCAM, LatentCounterfactual

    model = AttriVAEModel.load("runs/demo")             # a run folder or a model.safetensors
    encoding = model.encode("subject.nii.gz")           # μ, attribute estimates, class probabilities
    maps = AttributeGradCAM(model).attribute(encoding)  # (1, K, N, N, N): one map per attribute
    cf = LatentCounterfactual(model).attribute(encoding, target=0)

The engine is layered; a module imports only from its own layer or below (checked by
import-linter, see ``pyproject.toml``)::

    cli                      the ``attrivae`` command
    evaluate | slicer        metrics, report, comparison | the Slicer module's GUI-free logic
    train | explain          trainer, configs, presets | Grad-CAM, counterfactuals, IG
    inference                AttriVAEModel: a trained model used on images
    cohorts                  phantom and brain cohorts through a registry
    nn                       network, losses, fast path, checkpoints, calibration
    data                     images, manifests, preprocessing, datasets, attributes
    core                     errors, atomic writes
"""

__version__ = "0.1.0"

from AttriVAELib.core.errors import AttriVAEError  # noqa: E402
from AttriVAELib.core.lazy import lazy_exports  # noqa: E402

_EXPORTS = {
    # inference
    "AttriVAEModel": "AttriVAELib.inference.model",
    "Encoding": "AttriVAELib.inference.encoding",
    "export_monai_bundle": "AttriVAELib.inference.monai_bundle",
    # network
    "AttriVAE": "AttriVAELib.nn.model",
    "ModelConfig": "AttriVAELib.nn.config",
    # explanations
    "AttributeGradCAM": "AttriVAELib.explain.gradcam",
    "ClassifierGradCAM": "AttriVAELib.explain.gradcam",
    "LatentCounterfactual": "AttriVAELib.explain.counterfactual",
    "Counterfactual": "AttriVAELib.explain.counterfactual",
    "LatentPathIntegratedGradients": "AttriVAELib.explain.integrated_gradients",
    "PathAttribution": "AttriVAELib.explain.integrated_gradients",
    "Explanation": "AttriVAELib.explain.explain",
    "explain_encoding": "AttriVAELib.explain.explain",
    # training and evaluation (the functions; ``AttriVAELib.train`` is the subpackage)
    "train_model": "AttriVAELib.train.trainer",
    "evaluate_run": "AttriVAELib.evaluate.evaluation",
    # data
    "Geometry": "AttriVAELib.data.io",
    "Volume": "AttriVAELib.data.io",
    "read_image": "AttriVAELib.data.io",
    "write_image": "AttriVAELib.data.io",
    "load_manifest": "AttriVAELib.data.manifest",
}

__all__ = ["AttriVAEError", "__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
