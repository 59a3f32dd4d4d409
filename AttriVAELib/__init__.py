"""AttriVAELib: the Attri-VAE engine behind the AttriVAE 3D Slicer extension.

The package imports without Slicer, Qt or a GPU. Heavy submodules (torch models,
training, explanations) are imported on use, not here.
"""

__version__ = "0.1.0"

from AttriVAELib.errors import AttriVAEError  # noqa: E402

__all__ = ["AttriVAEError", "__version__"]
