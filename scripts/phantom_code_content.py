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
  μ fitted on the training subjects: how much of that factor the code carries;
- where the lesion lies: the unit vector from the phantom's centre (the centroid of its wall and
  lesion masks) to the lesion's centroid, read from μ by the same kind of linear map, with the
  median angle between the read and the true direction on the held-out subjects and what that
  angle spans on the outer wall (mm). A decoder cannot draw a lesion sharper than its code
  places it: a code that places it within a few voxels gets its least squared error from a
  faint blur over those places.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LinearRegression

from AttriVAELib.data.io import read_mask
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


def lesion_direction(record: Record) -> np.ndarray | None:
    """Unit vector (LPS) from the phantom's centre to its lesion's centroid; None without a lesion
    (or without the wall mask that places the centre)."""
    if record.lesion is None or record.mask is None:
        return None
    lesion = read_mask(record.lesion, allow_empty=True)
    if not lesion.array.any():
        return None
    wall = read_mask(record.mask, reference=lesion.geometry, allow_empty=True)

    def centroid(mask: np.ndarray) -> np.ndarray:
        return lesion.geometry.index_to_physical(np.argwhere(mask).mean(axis=0)[::-1])  # (z, y, x) → (i, j, k)

    offset = centroid(lesion.array > 0) - centroid((lesion.array > 0) | (wall.array > 0))
    return offset / np.linalg.norm(offset)


def lesion_place(train: tuple[np.ndarray, list[Record]], test: tuple[np.ndarray, list[Record]],
                 outer_radius_mm: float) -> str:
    """The held-out readout of the lesion's direction from μ (module docstring), as one line.

    ``train``, ``test``: each split's μ (N, L) and its records, in the same order.
    """
    fitted = {}
    for split_name, (mu, records) in (("train", train), ("test", test)):
        directions = [lesion_direction(r) for r in records]
        keep = [i for i, d in enumerate(directions) if d is not None]
        fitted[split_name] = mu[keep], np.array([directions[i] for i in keep]).reshape(len(keep), 3)
    (mu_train, d_train), (mu_test, d_test) = fitted["train"], fitted["test"]
    if len(d_train) < 3 or len(d_test) < 2:
        return "lesion's place: too few subjects with a lesion to read it"
    reader = LinearRegression().fit(mu_train, d_train)
    read = reader.predict(mu_test)
    cosine = (read * d_test).sum(axis=1) / np.maximum(np.linalg.norm(read, axis=1), 1e-12)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    score = reader.score(mu_test, d_test)
    median = float(np.median(angle))
    return (f"lesion's direction from the centre ({len(d_test)} held-out subjects with a lesion): R² {score:.2f}, "
            f"median angle {median:.0f}° ({np.radians(median) * outer_radius_mm:.1f} mm on the outer wall)")


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
    codes: dict[str, tuple[np.ndarray, np.ndarray, list[Record]]] = {}
    for split_name in ("train", "val", "test"):
        records = manifest.subset(split[split_name])
        mu = np.stack([e.mu for e in model.encode_batch([r.image for r in records])])
        factors = factor_matrix(records, names)
        codes[split_name] = mu, factors, records
        d = manifest.attribute_matrix(records)[:, dim]
        print(f"{split_name} ({len(records)}): μ_{dim} → max diameter R² {r2(mu[:, dim], d):.3f}, "
              f"→ mean in-plane diameter {r2(mu[:, dim], mean_in_plane_diameter(factors, names)):.3f}")

    (mu_train, f_train, records_train), (mu_test, f_test, records_test) = codes["train"], codes["test"]
    print("held-out R² of a linear map from μ (fitted on the training subjects) to each generating factor:")
    for i, name in enumerate(names):
        if np.ptp(f_train[:, i]) == 0:
            continue  # constant in this cohort (e.g. no lesion factors drawn)
        score = LinearRegression().fit(mu_train, f_train[:, i]).score(mu_test, f_test[:, i])
        print(f"  {name} {score:.2f}")
    outer_radius = float(np.median(manifest.attribute_matrix()[:, dim])) / 2
    print(lesion_place((mu_train, records_train), (mu_test, records_test), outer_radius))


if __name__ == "__main__":
    main()
