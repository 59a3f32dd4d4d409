"""The ``docs/README.md`` of an exported MONAI bundle: attributes, input, outputs, use, licence.

Written by :func:`AttriVAELib.inference.monai_bundle.export_monai_bundle` from the loaded model
and the bundle's ``metadata.json`` content.
"""

from __future__ import annotations

from typing import Any, Mapping

from AttriVAELib.inference.model import AttriVAEModel

__all__ = ["bundle_readme"]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "-"


def _preprocessing(model: AttriVAEModel) -> list[str]:
    spec = model.spec
    n = spec.size
    if spec.crop_to_mask:
        region = f"the mask's bounding box plus {spec.margin_mm:g} mm"
    else:
        region = "the whole image"
    whose = "the box's" if spec.crop_to_mask else "the image's"
    side = f"{spec.fov_mm:g} mm" if spec.fov_mm is not None else f"{whose} largest physical extent"
    if spec.intensity_window is not None:
        lo, hi = spec.intensity_window
        scale = f"intensities are clipped to the fixed window [{lo:g}, {hi:g}] and scaled to [0, 1]"
    else:
        lo, hi = spec.percentiles
        inside = " inside the mask" if spec.apply_mask else ""
        scale = (f"intensities are clipped to their {lo:g}th and {hi:g}th percentiles{inside} and scaled to "
                 "[0, 1]")
    lines = [
        f"1. the image is resampled (linear, in physical space, keeping its direction) onto an isotropic {n}³ "
        f"cube centred on {region}, whose side is {side}" + (", after a Gaussian anti-aliasing filter"
                                                             if spec.antialias else "") + ";",
        f"2. {scale}" + (f", then raised to the power {spec.gamma:g}" if spec.gamma is not None else "") + ";",
    ]
    if spec.apply_mask:
        lines.append("3. voxels outside the mask are set to 0;")
    lines[-1] = lines[-1].rstrip(";") + "."
    if spec.needs_mask:
        lines.append("")
        lines.append("This model needs a mask with each image: put masks with the same file names in "
                     "`masks/` (or set `mask_dir`).")
    return lines


def bundle_readme(model: AttriVAEModel, meta: Mapping[str, Any]) -> str:
    """The README text of a bundle whose ``metadata.json`` content is ``meta``."""
    n, c, L, k = model.input_size, model.config.in_channels, model.latent_size, model.num_regularized
    section = meta.get("attrivae") or {}
    rows = [f"| {d['dim']} | {_cell(d['name'])} | {_cell(d['unit'])} |" for d in section.get("attributes", [])]
    attributes = "\n".join(["| latent dim | attribute | unit |", "|---|---|---|", *rows]) if rows else \
        "This model regularizes no latent dimension."
    outputs = [
        "| output | shape | meaning |", "|---|---|---|",
        f"| `latent` (default) | (B, {L}) | posterior mean μ: the deterministic latent code |",
        f"| `logvar` | (B, {L}) | posterior log-variance log σ² |",
    ]
    if model.has_classifier:
        labels = ", ".join(_cell(x) for x in model.label_names) or "unnamed"
        outputs.append(f"| `probabilities` | (B, {model.num_classes}) | class probabilities of μ "
                       f"(classes: {labels}) |")
    weights = section.get("weights") or {}
    digests = "\n".join(f"  - `{name}`: `{digest}`" for name, digest in weights.items())
    free = f"Dimensions {k} to {L - 1} are free." if k < L else "Every dimension is tied to an attribute."
    return f"""# {_cell(meta.get('name', 'Attri-VAE'))}: an Attri-VAE model as a MONAI bundle

{meta['description']}

- Task: {meta['task']}.
- Version {meta['version']}, exported by {section.get('exported_by', 'attrivae')}.
- Intended use: {meta.get('intended_use', 'research')}

## Attributes

Latent dimension *k* < {k} is tied to attribute *k*: training made it increase with the attribute
(a monotone, not a linear, relation). {free}

{attributes}

## Input

`configs/inference.json` reads any 3D image (NIfTI, NRRD, MHA/MHD) and prepares the network's
input `image`: a ({c}, {n}, {n}, {n}) float32 cube in [0, 1] per image, batched to
(B, {c}, {n}, {n}, {n}). The preparation is the AttriVAE engine's own:

{chr(10).join(_preprocessing(model))}

## Outputs

The network (`network_def`) returns one tensor, chosen by its `output` argument:

{chr(10).join(outputs)}

## Use

With MONAI (nothing is downloaded; the weights load with `torch.load(..., weights_only=True)`):

```python
from monai.bundle import ConfigParser

parser = ConfigParser()
parser.read_config("configs/inference.json")
parser.read_meta("configs/metadata.json")
parser["bundle_root"] = "."                                 # this folder
network = parser.get_parsed_content("network")              # models/model.pt loaded, eval mode
prepare = parser.get_parsed_content("preprocessing")
x = prepare({{"image": "case.nii.gz"}})["image"][None]       # (1, {c}, {n}, {n}, {n})
mu = network(x.to(parser.get_parsed_content("device")))     # (1, {L})
```

Set `parser["network_def::output"] = "probabilities"` (or `"logvar"`) before parsing for the
other outputs. To encode a folder of images into `eval/latents.json` (μ, log σ² and class
probabilities per image):

```bash
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
    --bundle_root . --dataset_dir /path/to/images
```

`monai.bundle.load(name, bundle_dir=PARENT_FOLDER, workflow_type="inference")` also builds the
network from this folder and loads `models/model.pt` into it.

The components the configs name (`AttriVAEBundleNet`, `AttriVAEPreprocessd`, `list_images`,
`load_weights`, `LatentEncoder`) come from `AttriVAELib.inference.bundle_components`: the
`attrivae` package ({section.get('exported_by', 'attrivae')} or later) must be installed.

`models/` is also an AttriVAE checkpoint: `AttriVAEModel.load("models")` gives the attribute
estimates in their units (through the stored calibration), decoding, traversals and Grad-CAM.

## Files

- `models/model.pt`: the network's state dict (tensors only).
- `models/model.safetensors` and `models/model.json`: the same weights as an AttriVAE checkpoint
  (no pickle; the JSON holds the settings and the weights' SHA-256).
- SHA-256 of the weights:
{digests}

`monai.bundle.verify_metadata` downloads its JSON schema, so it needs a network connection and
the `jsonschema` package. The exporter checked offline that `configs/metadata.json` has every key
the bundle specification requires.

## Licence

{meta.get('license', 'not stated')}. Copyright: {meta['copyright']}. Authors: {meta['authors']}.

Please cite: {'; '.join(meta.get('references', []))}
"""
