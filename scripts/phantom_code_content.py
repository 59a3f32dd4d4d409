"""What a phantom model's code carries of the cohort's generating factors (not part of the test suite).

    python scripts/phantom_code_content.py --model RUN --cohort demo/cohort

Prints, from the cohort's generating factors (the manifest's ``factor_*`` columns) and the
model's μ:

- the diameter's ceiling. The phantom's outer shell has in-plane semi-axes a and k·a (k in
  [0.85, 1]); its maximum axial diameter is 2a. A code that carries the mean in-plane diameter
  a·(1 + k) but not the aspect ratio k reads 2a with an error set by k alone: the ceiling is the
  R² of the best straight line from a·(1 + k) to the measured maximum diameter;
- per split: R² of a straight line from the diameter dimension's μ to the maximum diameter (the
  interpretability score at that dimension: the same in-sample fit ``attrivae evaluate`` makes)
  and to the mean in-plane diameter;
- for each generating factor, the R² on the held-out (test) subjects of a linear map from all of
  μ fitted on the training subjects: how much of that factor the code carries.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LinearRegression

from AttriVAELib.data.manifest import Manifest, Record, load_manifest, load_split
from AttriVAELib.inference.model import AttriVAEModel

DIAMETER = "max_axial_diameter_mm"
FACTOR_PREFIX = "factor_"


def r2(x: np.ndarray, y: np.ndarray) -> float:
    x = x.reshape(len(y), -1)
    return float(LinearRegression().fit(x, y).score(x, y))


def mean_in_plane_diameter(factors: np.ndarray, names: list[str]) -> np.ndarray:
    """a·(1 + k): the mean of the shell's two in-plane outer diameters, from (N, F) factors."""
    return factors[:, names.index("diameter_mm")] * (1 + factors[:, names.index("k")]) / 2


def factor_matrix(records: list[Record], names: list[str]) -> np.ndarray:
    """(N, F) generating factors of the records, in ``names`` order."""
    return np.array([[float(r.metadata[FACTOR_PREFIX + n]) for n in names] for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder or model bundle trained on a phantom cohort")
    parser.add_argument("--cohort", required=True, help="the phantom cohort it was trained on")
    args = parser.parse_args()

    model = AttriVAEModel.load(args.model)
    dim = model.attribute_names.index(DIAMETER)
    manifest: Manifest = load_manifest(args.cohort, attributes=model.attribute_names)
    names = [k[len(FACTOR_PREFIX):] for k in manifest.records[0].metadata if k.startswith(FACTOR_PREFIX)]
    diameter = manifest.attribute_matrix()[:, dim]
    ceiling = r2(mean_in_plane_diameter(factor_matrix(manifest.records, names), names), diameter)
    print(f"ceiling of a k-blind reader (all {len(diameter)} subjects): R² {ceiling:.3f}")

    split = load_split(manifest, create=False)
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split_name in ("train", "val", "test"):
        records = manifest.subset(split[split_name])
        mu = np.stack([e.mu for e in model.encode_batch([r.image for r in records])])
        factors = factor_matrix(records, names)
        codes[split_name] = mu, factors
        d = manifest.attribute_matrix(records)[:, dim]
        print(f"{split_name} ({len(records)}): μ_{dim} → max diameter R² {r2(mu[:, dim], d):.3f}, "
              f"→ mean in-plane diameter {r2(mu[:, dim], mean_in_plane_diameter(factors, names)):.3f}")

    (mu_train, f_train), (mu_test, f_test) = codes["train"], codes["test"]
    print("held-out R² of a linear map from μ (fitted on the training subjects) to each generating factor:")
    for i, name in enumerate(names):
        if np.ptp(f_train[:, i]) == 0:
            continue  # constant in this cohort (e.g. no lesion factors drawn)
        score = LinearRegression().fit(mu_train, f_train[:, i]).score(mu_test, f_test[:, i])
        print(f"  {name} {score:.2f}")


if __name__ == "__main__":
    main()
