"""Explanations of an encoded image: Grad-CAM, counterfactuals, integrated gradients, montages.

Each method is one class with one verb, as in captum: ``AttributeGradCAM(model).attribute(x)``,
``LatentCounterfactual(model).attribute(encoding, target=0)``,
``LatentPathIntegratedGradients(model).attribute(z_start, z_end)``; :func:`explain_encoding` runs
them all on one encoding (the step the CLI, the evaluation, the report and Slicer share).

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

#: How :func:`counterfactual` moves an encoding towards a class (see its module's docstring).
COUNTERFACTUAL_METHODS = ("auto", "exemplar", "class_mean", "flip")

_EXPORTS = {
    "default_layer": "AttriVAELib.explain.gradcam",
    "AttributeGradCAM": "AttriVAELib.explain.gradcam",
    "ClassifierGradCAM": "AttriVAELib.explain.gradcam",
    "LatentGradCAM": "AttriVAELib.explain.gradcam",
    "resolve_layer": "AttriVAELib.explain.gradcam",
    "upsample_maps": "AttriVAELib.explain.gradcam",
    "normalize_maps": "AttriVAELib.explain.gradcam",
    "Counterfactual": "AttriVAELib.explain.counterfactual",
    "LatentCounterfactual": "AttriVAELib.explain.counterfactual",
    "class_statistics": "AttriVAELib.explain.counterfactual",
    "counterfactual": "AttriVAELib.explain.counterfactual",
    "flip_latent": "AttriVAELib.explain.counterfactual",
    "select_dims": "AttriVAELib.explain.counterfactual",
    "LatentPathIntegratedGradients": "AttriVAELib.explain.integrated_gradients",
    "PathAttribution": "AttriVAELib.explain.integrated_gradients",
    "latent_path_integrated_gradients": "AttriVAELib.explain.integrated_gradients",
    "Explanation": "AttriVAELib.explain.explain",
    "explain_encoding": "AttriVAELib.explain.explain",
    "cube_centre_index": "AttriVAELib.explain.montage",
    "orthogonal_slices": "AttriVAELib.explain.montage",
    "montage_png": "AttriVAELib.explain.montage",
    "save_montage": "AttriVAELib.explain.montage",
    "save_strip": "AttriVAELib.explain.montage",
    "strip_png": "AttriVAELib.explain.montage",
    "peak_index": "AttriVAELib.explain.montage",
    "figure_png": "AttriVAELib.explain.montage",
}
__all__ = sorted([*_EXPORTS, "COUNTERFACTUAL_METHODS"])
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
