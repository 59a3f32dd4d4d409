"""Where a brain attribute is lost between the image and a decoded brain.

For a few held-out subjects of a run trained on a ``synth-brain`` cohort (subjects without
lesions), renders the subject again with the attribute set to the 5th and the 95th
percentile of the test split (everything else unchanged) and prints, for each of the two
images, the attribute as the cohort measures it (``AttriVAELib.cohorts.brain.measure``):

* on the rendered image (the measure's own response);
* after the round trip to the model grid and back (what resampling leaves);
* on the model's reconstruction (what the decoder renders);

beside the attribute's latent dim for that image. Then, along the dim's own 5–95 % range
(a traversal of the subject's encoding), the summed intensity change of the decoded brain
and its voxel-wise correlation with the change the generator makes.

Last, which half loses the change, on the model grid: the measure on the low image's
reconstruction plus the *real* change between the two renderings (does the measure see a
change in a reconstruction's context?), and on the low image plus the change between the two
*reconstructions* (how much of the change does the decoder render?). Both read the full change
when nothing is lost.

    PYTHONPATH=. python benchmarks/brain_roundtrip.py --run brain/run
        [--attribute cortical_thickness_mm] [--subjects 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.cohorts.brain import generator as brain  # noqa: E402
from AttriVAELib.cohorts.registry import cohort_kind  # noqa: E402
from AttriVAELib.core.errors import AttriVAEError  # noqa: E402
from AttriVAELib.data.io import Volume, write_image  # noqa: E402
from AttriVAELib.evaluate.evaluation import evaluation_records  # noqa: E402
from AttriVAELib.inference.model import AttriVAEModel  # noqa: E402

#: measured attribute → the factor of :class:`AttriVAELib.cohorts.brain.generator.BrainFactors` that sets it
FACTOR = {
    "cortical_thickness_mm": "target_cortical_thickness_mm",
    "ventricle_volume_ml": "target_ventricle_volume_ml",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder trained on a synth-brain cohort")
    parser.add_argument("--attribute", default="cortical_thickness_mm", choices=sorted(FACTOR))
    parser.add_argument("--subjects", type=int, default=3)
    args = parser.parse_args()

    model = AttriVAEModel.load(args.run, device="cpu")
    manifest, records, _ = evaluation_records(model, None, "test")
    kind = cohort_kind(manifest)
    if kind.name != "brain":
        parser.error(f"{args.run} was not trained on a synth-brain cohort")
    meta = json.loads((manifest.root / "cohort.json").read_text())
    size, seed = int(meta["size"]), int(meta["seed"])
    dim = model.dim_index(args.attribute)
    column = manifest.attribute_names.index(args.attribute)
    low, high = np.percentile(manifest.attribute_matrix(records)[:, column], [5, 95])
    mu = np.stack([e.mu for e in model.encode_batch([r.image for r in records])])
    z_low, z_high = np.percentile(mu[:, dim], [5, 95])
    geometry = brain.geometry_for_size(size)

    def measure(volume: Volume) -> float:
        values = kind.measure(volume)
        return float("nan") if not values else values[args.attribute]

    healthy = [r for r in records if r.label in (None, "0")][:args.subjects]
    print(f"{args.attribute}: test-split 5th / 95th percentile {low:.2f} / {high:.2f}; dim {dim}")
    with tempfile.TemporaryDirectory() as tmp:
        for record in healthy:
            factors = brain.sample_factors(int(record.subject.split("-")[-1]), seed)
            rendered, encoded, recon = [], [], []
            for value in (low, high):
                image = brain.render_factors(dataclasses.replace(factors, **{FACTOR[args.attribute]: float(value)}),
                                             size)[0].astype(np.float32)
                path = write_image(Volume(image, geometry), Path(tmp) / "subject.nii.gz")
                enc = model.encode(str(path))
                rendered.append(image)
                encoded.append(enc)
                recon.append(model.reconstruct(enc))
                print(f"  {record.subject} set {value:.2f}: image {measure(Volume(image, geometry)):.2f}  "
                      f"model grid {measure(model.to_input_grid(enc.image, enc)):.2f}  "
                      f"reconstruction {measure(model.to_input_grid(recon[-1], enc)):.2f}  "
                      f"dim {enc.mu[dim]:+.2f}")
            enc = model.encode(record.image)
            ends = [model.to_input_grid(v, enc).array for v in model.traverse(enc, dim, [z_low, z_high])]
            decoded = ends[1] - ends[0]
            scale = np.percentile(rendered[0][rendered[0] > 0], 99)  # rendered images are in scanner-like units
            real = (rendered[1] - rendered[0]) / scale
            print(f"  {record.subject} traversal {z_low:+.2f} → {z_high:+.2f}: summed change {decoded.sum():+.0f} "
                  f"(generator {real.sum():+.0f}), voxel-wise correlation "
                  f"{np.corrcoef(decoded.ravel(), real.ravel())[0, 1]:+.2f}")
            grid = [e.image for e in encoded]

            def on_grid(array: np.ndarray) -> float:
                return measure(model.to_input_grid(array.astype(np.float32), encoded[0]))

            print(f"  {record.subject} change {on_grid(grid[0]):.2f} → {on_grid(grid[1]):.2f} on the model grid; "
                  f"reconstruction + real change {on_grid(recon[0]):.2f} → {on_grid(recon[0] + grid[1] - grid[0]):.2f}; "
                  f"image + reconstructions' change → {on_grid(grid[0] + recon[1] - recon[0]):.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AttriVAEError as err:  # a missing or wrong run: one line, as the CLI does
        sys.exit(f"brain_roundtrip: {err}")
