"""What the disentanglement metrics can reach: scores of ideal codes of known precision.

Each code has one latent dim per attribute, equal to the standardized attribute plus Gaussian
noise so that Pearson ρ(dim, attribute) = ``rho``, and 12 further dims of pure noise (L = 16,
as the ``fast_cpu`` preset); nothing leaks between dims. Attributes are like the phantom
cohort's: three independent uniform ones, and, with ``--lesion``, a lesion-volume-like one that
is 0 for half the subjects (as in a cohort where half have no lesion) and uniform otherwise.

The table shows, per ρ and sample size, the median over ``--draws`` draws of each score. It
says how precise an encoder must be for a target: e.g. MIG (kNN) ≥ 0.5 on 150 held-out
subjects needs ρ ≈ 0.995 even for an otherwise perfect code, because the kNN estimate of
H(a) = MI(a; a) grows with log N while MI(z; a) is bounded by the code's precision.

    python benchmarks/metric_ceilings.py [--n 150 1000] [--rho 0.9 0.95 0.97 0.99 0.995] [--lesion]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.evaluate import metrics  # noqa: E402

FREE_DIMS = 12


def ideal_code(n: int, rho: float, lesion: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Attributes (n, K) and a code (n, K + FREE_DIMS) whose dim k has correlation ``rho`` with attribute k."""
    a = rng.uniform(size=(n, 4 if lesion else 3))
    if lesion:
        a[:, 3] *= rng.uniform(size=n) < 0.5
    k = a.shape[1]
    z = rng.normal(size=(n, k + FREE_DIMS))
    standardized = (a - a.mean(0)) / a.std(0)
    z[:, :k] = rho * standardized + np.sqrt(1 - rho**2) * rng.normal(size=(n, k))
    return z, a


def scores(z: np.ndarray, a: np.ndarray) -> dict[str, float]:
    return {
        "interpretability": metrics.interpretability(z, a).score,
        "SCC": metrics.spearman_score(z, a).score,
        "SAP": metrics.sap(z, a).score,
        "MIG (kNN)": metrics.mig(z, a, estimator="knn").score,
        "MIG (binned)": metrics.mig(z, a, estimator="binned").score,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[150, 1000], help="sample sizes (held-out subjects)")
    p.add_argument("--rho", type=float, nargs="+", default=[0.9, 0.95, 0.97, 0.98, 0.99, 0.995])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--lesion", action="store_true", help="add a zero-inflated (lesion-volume-like) attribute")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    header = None
    for n in args.n:
        for rho in args.rho:
            runs = [scores(*ideal_code(n, rho, args.lesion, rng)) for _ in range(args.draws)]
            row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            if header is None:
                header = list(row)
                print("| n | ρ | " + " | ".join(header) + " |")
                print("|---|---|" + "---|" * len(header))
            print(f"| {n} | {rho:g} | " + " | ".join(f"{row[k]:.2f}" for k in header) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
