"""What a phantom model's diameter dimension reads (not part of the test suite).

    python scripts/diameter_ceiling.py --model RUN --cohort demo/cohort

The phantom's outer shell has in-plane semi-axes a and k·a (k in [0.85, 1]); its maximum axial
diameter is 2a. A code that carries the mean in-plane diameter a·(1 + k) but not the aspect
ratio k reads 2a with an error set by k alone. The script prints, from the cohort's generating
factors and the model's μ:

- the ceiling: R² of the best straight line from the mean in-plane diameter to the measured
  maximum axial diameter (what a perfect k-blind reader scores);
- per split: R² of a straight line from the diameter dimension's μ to the maximum diameter (the
  interpretability score) and to the mean in-plane diameter, and of a linear map from all of μ to
  k fitted on the training split (so scored out of sample on the others).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LinearRegression

from AttriVAELib.data.manifest import load_manifest, load_split
from AttriVAELib.inference.model import AttriVAEModel

DIAMETER = "max_axial_diameter_mm"


def r2(x: np.ndarray, y: np.ndarray) -> float:
    x = x.reshape(len(y), -1)
    return float(LinearRegression().fit(x, y).score(x, y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder or model bundle trained on a phantom cohort")
    parser.add_argument("--cohort", required=True, help="the phantom cohort it was trained on")
    args = parser.parse_args()

    model = AttriVAEModel.load(args.model)
    dim = model.attribute_names.index(DIAMETER)
    manifest = load_manifest(args.cohort, attributes=model.attribute_names)
    factors = {r.subject: (float(r.metadata["factor_diameter_mm"]), float(r.metadata["factor_k"])) for r in manifest.records}
    both = np.array(list(factors.values()))
    diameter = manifest.attribute_matrix(manifest.records)[:, dim]
    mean_in_plane = both[:, 0] * (1 + both[:, 1]) / 2
    print(f"ceiling of a k-blind reader (all {len(diameter)} subjects): R² {r2(mean_in_plane, diameter):.3f}")

    to_k = None
    for split_name, subjects in sorted(load_split(manifest, create=False).items(), key=lambda item: item[0] != "train"):
        records = manifest.subset(subjects)
        mu = np.stack([e.mu for e in model.encode_batch([r.image for r in records])])
        d = manifest.attribute_matrix(records)[:, dim]
        a, k = np.array([factors[r.subject] for r in records]).T
        if to_k is None:  # the training split comes first
            to_k = LinearRegression().fit(mu, k)
        print(f"{split_name} ({len(records)}): μ_{dim} → max diameter R² {r2(mu[:, dim], d):.3f}, "
              f"→ mean in-plane diameter {r2(mu[:, dim], a * (1 + k) / 2):.3f}; all μ → k {to_k.score(mu, k):.3f}")


if __name__ == "__main__":
    main()
