"""Disentanglement and interpretability metrics of a latent space against known attributes.

All functions take latents ``z`` of shape (N, L) — use μ of a held-out split — and attributes
``a`` of shape (N, K) (a 1-D ``a`` is one attribute). Column k of ``a`` is attribute k, named
by ``names[k]`` (default ``"attr<k>"``); ``intended[k]`` is the latent dim regularized for it
(default k). MI is in nats; r ranges over latent dims, k over attributes.

Interpretability (Pati & Lerch, AR-VAE, 2021)
    r*_k = argmax_r MI(z_r; a_k)  (kNN estimator, sklearn ``mutual_info_regression``);
    R²_k of the 1-D least-squares line z_{r*_k} → a_k, fitted and scored in-sample as AR-VAE
    does, which equals the squared Pearson correlation; score = mean_k R²_k. The result also
    says whether r*_k is the intended dim and gives R² at the intended dim.
MIG (Chen et al., 2018)
    MIG = mean_k (I⁽¹⁾_k − I⁽²⁾_k) / H(a_k), I⁽¹⁾ ≥ I⁽²⁾ the two largest MI(z_r; a_k) over r
    (I⁽²⁾ = 0 when L = 1). Two estimators, which give different numbers:
    ``"knn"``: Kraskov kNN MI (3 neighbours) with H(a_k) := MI(a_k; a_k), as in AR-VAE;
    ``"binned"``: every column cut into ``bins`` equal-width bins (``np.histogram`` edges +
    ``np.digitize``, as disentanglement_lib), MI and H = ``sklearn.metrics.mutual_info_score``.
    kNN MI(a; a) is a finite, N-dependent stand-in for the infinite self-information of a
    continuous variable, so kNN MIG reaches ≈ 1 only for (nearly) noise-free factors.
SAP (Kumar et al., 2018)
    S[r, k] = Cov(z_r, a_k)² / (Var z_r · Var a_k), 0 where Var z_r < 1e-12;
    SAP = mean_k (S⁽¹⁾_k − S⁽²⁾_k), the two largest S[·, k] over r.
SCC (Spearman correlation score, AR-VAE)
    C[r, k] = |ρ_s(z_r, a_k)| if its two-sided p-value ≤ α (0.05) else 0; SCC = mean_k max_r C.
    Invariant to monotone transforms; it rewards a dim per attribute, not a one-to-one map.
Modularity (Ridgeway & Mozer, 2018)
    m[r, k] = MI(z_r; a_k), θ_r = max_k m[r, k]²,
    modularity_r = 1 − (Σ_k m[r, k]² − θ_r) / (θ_r (K − 1)); score = mean_r modularity_r.
    As in AR-VAE and disentanglement_lib, a dim with θ_r = 0 (it carries no information,
    e.g. a constant dim) scores 0 and stays in the mean. K = 1 gives 1. The plain mean lets
    pure-noise dims (the free dims of an Attri-VAE) pull the score down, so the result also
    has ``weighted_score`` = Σ_r θ_r modularity_r / Σ_r θ_r: each dim counts by how much it
    says about its main attribute. The plug-in binned MI of independent columns is biased
    upwards by about (bins − 1)² / (2N) nats (0.36 at N = 500, 20 bins), so at small N
    noise dims still weigh in and binned scores fall for every model. The default MI is
    binned: with the kNN estimator, whose estimates are clipped at 0, a pure-noise dim often
    has MI > 0 with one attribute only and so scores ≈ 1, and random latents look modular
    (≈ 0.95 for N = 500, L = K = 4). AR-VAE's code, and so most published modularity
    values, use the kNN estimator.
DCI (Eastwood & Williams, 2018)
    One gradient-boosted tree ensemble per attribute (sklearn ``GradientBoostingRegressor``,
    the regression twin of disentanglement_lib's classifier; 100 trees of depth 3, about
    1.8 s per attribute at N = 750, L = 64 on 2 cores) predicts a_k from all of z
    on a training part; R[r, k] = its ``feature_importances_`` (L, K), P = R normalized.
    Disentanglement D = Σ_r ρ_r (1 − H_K(P[r, ·])), ρ_r = Σ_k R[r, k] / Σ R;
    completeness C = mean_k (1 − H_L(P[·, k])) (importances of each attribute sum to 1, so
    this equals the importance-weighted mean); informativeness I = mean_k R² of the held-out
    prediction (can be < 0). H_b is the entropy in base b of the normalized row or column.

Standardization: the kNN estimator sees z-scored columns (sklearn rescales them anyway);
every other metric is invariant to affine rescaling of a column, so it is not needed there.
A constant latent dim is allowed (a collapsed VAE dim) and carries no information; a
constant attribute, non-finite values, mismatched shapes or fewer than 10 samples raise
:class:`MetricInputError` (an :class:`~AttriVAELib.core.errors.InputError` and a ``ValueError``).

References: A. Pati, A. Lerch, "Attribute-based regularization of latent spaces for
variational auto-encoders", Neural Comput. Appl. 33, 2021; R. T. Q. Chen et al., "Isolating
sources of disentanglement in VAEs", NeurIPS 2018; A. Kumar, P. Sattigeri, A. Balakrishnan,
"Variational inference of disentangled latent concepts from unlabeled observations",
ICLR 2018; K. Ridgeway, M. C. Mozer, "Learning deep disentangled embeddings with the
F-statistic loss", NeurIPS 2018; C. Eastwood, C. K. I. Williams, "A framework for the
quantitative evaluation of disentangled representations", ICLR 2018.

Why one long module: every metric here is one formula over the same two matrices (μ and the
attributes) and shares the same estimators (kNN and binned mutual information, entropies,
the top-two gaps) and input checks; splitting them would scatter those private helpers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Real
from typing import Any, Sequence

import numpy as np

from AttriVAELib.core.errors import InputError

__all__ = [
    "DCIResult",
    "InterpretabilityResult",
    "MIGResult",
    "MetricInputError",
    "ModularityResult",
    "SAPResult",
    "SCCResult",
    "dci",
    "interpretability",
    "mig",
    "modularity",
    "sap",
    "spearman_score",
    "summarize",
]

MIN_SAMPLES = 10
KNN_NEIGHBORS = 3
DEFAULT_BINS = 20
_ESTIMATORS = ("knn", "binned")
_EPS_IMPORTANCE = 1e-11


class MetricInputError(InputError, ValueError):
    """Latents, attributes or options that a metric cannot be computed from."""


class _Result:
    """Conversion of a result dataclass to plain JSON-serializable values."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, eq=False)
class InterpretabilityResult(_Result):
    """AR-VAE interpretability.

    ``score`` mean R² at the most informative dims; ``per_attribute`` that R² per attribute;
    ``best_dims`` r*_k; ``intended_dims`` the dim meant for each attribute; ``intended_ok``
    whether r*_k is that dim; ``intended_r2`` R² at the intended dim and ``intended_score``
    its mean; ``mutual_information`` the kNN MI matrix (L, K).
    """

    score: float
    per_attribute: dict[str, float]
    best_dims: dict[str, int]
    intended_dims: dict[str, int]
    intended_ok: dict[str, bool]
    intended_r2: dict[str, float]
    intended_score: float
    mutual_information: np.ndarray


@dataclass(frozen=True, eq=False)
class MIGResult(_Result):
    """Mutual information gap.

    ``per_attribute`` the normalized gap per attribute; ``top_dims`` the dims of I⁽¹⁾ and
    I⁽²⁾ (second is -1 when L = 1); ``entropy`` H(a_k) under the estimator;
    ``mutual_information`` (L, K); ``bins`` is None for the kNN estimator.
    """

    score: float
    estimator: str
    bins: int | None
    per_attribute: dict[str, float]
    top_dims: dict[str, tuple[int, int]]
    entropy: dict[str, float]
    mutual_information: np.ndarray


@dataclass(frozen=True, eq=False)
class SAPResult(_Result):
    """SAP: ``per_attribute`` S⁽¹⁾ − S⁽²⁾, ``top_dims`` their dims, ``score_matrix`` S (L, K)."""

    score: float
    per_attribute: dict[str, float]
    top_dims: dict[str, tuple[int, int]]
    score_matrix: np.ndarray


@dataclass(frozen=True, eq=False)
class SCCResult(_Result):
    """Spearman correlation score.

    ``per_attribute`` max_r C[r, k]; ``best_dims`` the argmax; ``rho`` Spearman ρ (L, K)
    (0 for a constant dim); ``p_values`` two-sided p-values (L, K) (1 for a constant dim).
    """

    score: float
    alpha: float
    per_attribute: dict[str, float]
    best_dims: dict[str, int]
    rho: np.ndarray
    p_values: np.ndarray


@dataclass(frozen=True, eq=False)
class ModularityResult(_Result):
    """Modularity.

    ``score`` the plain mean over dims (the reference); ``weighted_score`` the mean weighted
    by θ_r = max_k m[r, k]²; ``per_dim`` (L,) modularity_r; ``mutual_information`` m (L, K).
    """

    score: float
    weighted_score: float
    estimator: str
    bins: int | None
    per_dim: np.ndarray
    mutual_information: np.ndarray


@dataclass(frozen=True, eq=False)
class DCIResult(_Result):
    """DCI. ``score`` equals ``disentanglement``, the number usually quoted as "DCI".

    ``per_dim_disentanglement`` (L,) 1 − H_K(P[r, ·]); ``dim_weights`` (L,) ρ_r;
    ``per_attribute_completeness`` and ``per_attribute_informativeness`` (held-out R²) by
    name; ``importance`` R (L, K); ``n_train``/``n_test`` the sizes of the two parts.
    """

    score: float
    disentanglement: float
    completeness: float
    informativeness: float
    per_dim_disentanglement: np.ndarray
    dim_weights: np.ndarray
    per_attribute_completeness: dict[str, float]
    per_attribute_informativeness: dict[str, float]
    importance: np.ndarray
    regressor: str
    n_train: int
    n_test: int


def interpretability(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
                     intended: Sequence[int] | None = None,
                     random_state: int | None = 0) -> InterpretabilityResult:
    """AR-VAE interpretability of latents ``z`` (N, L) for attributes ``a`` (N, K).

    ``intended`` (K,) gives the latent dim regularized for each attribute (default
    0..K-1, which needs K ≤ L); ``random_state`` seeds the kNN estimator's jitter.
    """
    z, a, names = _prepare(z, a, names)
    dims = _intended_dims(intended, a.shape[1], z.shape[1])
    return _interpretability_from(z, a, names, dims, _knn_mi(z, a, random_state))


def mig(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
        estimator: str = "knn", bins: int = DEFAULT_BINS,
        random_state: int | None = 0) -> MIGResult:
    """Mutual information gap of ``z`` (N, L) for ``a`` (N, K).

    ``estimator`` is ``"knn"`` (AR-VAE: kNN MI, H = MI(a; a)) or ``"binned"``
    (disentanglement_lib: ``bins`` equal-width bins per column); ``bins`` is used by
    ``"binned"`` only and ``random_state`` by ``"knn"`` only.
    """
    _check_estimator(estimator, bins)
    z, a, names = _prepare(z, a, names)
    if estimator == "knn":
        mi, h = _knn_mi(z, a, random_state), _knn_entropy(a, random_state)
    else:
        mi, h = _binned_mi(z, a, bins), _binned_entropy(a, bins)
    return _mig_from(mi, h, names, estimator, bins if estimator == "binned" else None)


def sap(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None) -> SAPResult:
    """Separated attribute predictability of ``z`` (N, L) for continuous ``a`` (N, K)."""
    z, a, names = _prepare(z, a, names)
    zc, ac = z - z.mean(axis=0), a - a.mean(axis=0)
    n = z.shape[0]
    cov = zc.T @ ac / (n - 1)
    var_z = np.einsum("ij,ij->j", zc, zc) / (n - 1)
    var_a = np.einsum("ij,ij->j", ac, ac) / (n - 1)
    s = np.zeros_like(cov)
    live = var_z >= 1e-12
    s[live] = cov[live] ** 2 / (var_z[live, None] * var_a[None, :])
    gaps, top = _top_two_gaps(s)
    return SAPResult(score=float(np.mean(gaps)),
                     per_attribute=_by_name(names, gaps),
                     top_dims=dict(zip(names, top)),
                     score_matrix=s)


def spearman_score(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
                   alpha: float = 0.05) -> SCCResult:
    """Spearman correlation score (SCC) of ``z`` (N, L) for ``a`` (N, K) at level ``alpha``."""
    from scipy.stats import spearmanr

    if isinstance(alpha, bool) or not (isinstance(alpha, Real) and 0.0 < alpha <= 1.0):
        raise MetricInputError(f"alpha={alpha!r} must be a significance level in (0, 1]")
    z, a, names = _prepare(z, a, names)
    n_dims, n_attr = z.shape[1], a.shape[1]
    rho = np.zeros((n_dims, n_attr))
    p = np.ones((n_dims, n_attr))
    for r in np.flatnonzero(np.ptp(z, axis=0) > 0):
        for k in range(n_attr):
            res = spearmanr(z[:, r], a[:, k])
            rho[r, k], p[r, k] = float(res.statistic), float(res.pvalue)
    c = np.where(p <= alpha, np.abs(rho), 0.0)
    best = np.argmax(c, axis=0)
    per_attr = c[best, np.arange(n_attr)]
    return SCCResult(score=float(np.mean(per_attr)), alpha=float(alpha),
                     per_attribute=_by_name(names, per_attr),
                     best_dims=dict(zip(names, (int(r) for r in best))),
                     rho=rho, p_values=p)


def modularity(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
               estimator: str = "binned", bins: int = DEFAULT_BINS,
               random_state: int | None = 0) -> ModularityResult:
    """Ridgeway & Mozer modularity of ``z`` (N, L) for ``a`` (N, K).

    ``estimator``: ``"binned"`` (default, ``bins`` equal-width bins) or ``"knn"`` (as AR-VAE,
    whose published modularity values use it).
    """
    _check_estimator(estimator, bins)
    z, a, names = _prepare(z, a, names)
    mi = _knn_mi(z, a, random_state) if estimator == "knn" else _binned_mi(z, a, bins)
    return _modularity_from(mi, estimator, bins if estimator == "binned" else None)


def dci(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
        z_test: np.ndarray | None = None, a_test: np.ndarray | None = None,
        test_fraction: float = 0.25, n_estimators: int = 100,
        random_state: int | None = 0) -> DCIResult:
    """Eastwood & Williams DCI of ``z`` (N, L) for ``a`` (N, K).

    With ``z_test`` (M, L) and ``a_test`` (M, K) the regressors are fitted on ``z, a`` and
    informativeness is measured on the test pair; otherwise a shuffled ``test_fraction`` of
    the rows (seeded by ``random_state``) is held out.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.metrics import r2_score

    z, a, names = _prepare(z, a, names)
    if (z_test is None) != (a_test is None):
        raise MetricInputError("pass both z_test and a_test, or neither")
    if not (isinstance(n_estimators, (int, np.integer)) and n_estimators >= 1):
        raise MetricInputError(f"n_estimators={n_estimators!r} must be a positive integer")
    if z_test is None:
        if not (isinstance(test_fraction, Real) and 0.0 < test_fraction < 1.0):
            raise MetricInputError(f"test_fraction={test_fraction!r} must be in (0, 1)")
        order = np.random.default_rng(random_state).permutation(z.shape[0])
        n_test = max(2, int(round(test_fraction * z.shape[0])))
        test, train = order[:n_test], order[n_test:]
        z_tr, a_tr, z_te, a_te = z[train], a[train], z[test], a[test]
    else:
        z_te, a_te = _as_matrix(z_test, "z_test"), _as_matrix(a_test, "a_test", allow_1d=True)
        if z_te.shape[1] != z.shape[1] or a_te.shape[1] != a.shape[1]:
            raise MetricInputError(
                f"z_test {z_te.shape} / a_test {a_te.shape} must have the {z.shape[1]} latent "
                f"dims and {a.shape[1]} attributes of z / a")
        if z_te.shape[0] != a_te.shape[0] or z_te.shape[0] < 2:
            raise MetricInputError(f"z_test has {z_te.shape[0]} rows and a_test "
                                   f"{a_te.shape[0]}; they need the same number, at least 2")
        z_tr, a_tr = z, a

    n_dims, n_attr = z.shape[1], a.shape[1]
    importance = np.zeros((n_dims, n_attr))
    info = np.zeros(n_attr)
    for k in range(n_attr):
        model = GradientBoostingRegressor(n_estimators=int(n_estimators),
                                          random_state=random_state)
        model.fit(z_tr, a_tr[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        info[k] = r2_score(a_te[:, k], model.predict(z_te))

    if n_attr == 1:
        per_dim = np.ones(n_dims)
    else:
        per_dim = 1.0 - _entropy_rows(importance + _EPS_IMPORTANCE, n_attr)
    total = importance.sum()
    weights = importance.sum(axis=1) / total if total > 0 else np.full(n_dims, 1.0 / n_dims)
    if n_dims == 1:
        per_attr_c = np.ones(n_attr)
    else:
        per_attr_c = 1.0 - _entropy_rows(importance.T + _EPS_IMPORTANCE, n_dims)
    d = float(np.sum(per_dim * weights))
    return DCIResult(score=d, disentanglement=d,
                     completeness=float(np.mean(per_attr_c)),
                     informativeness=float(np.mean(info)),
                     per_dim_disentanglement=per_dim, dim_weights=weights,
                     per_attribute_completeness=_by_name(names, per_attr_c),
                     per_attribute_informativeness=_by_name(names, info),
                     importance=importance,
                     regressor=f"GradientBoostingRegressor(n_estimators={int(n_estimators)}, "
                               "max_depth=3)",
                     n_train=int(z_tr.shape[0]), n_test=int(z_te.shape[0]))


def summarize(z: np.ndarray, a: np.ndarray, names: Sequence[str] | None = None,
              intended: Sequence[int] | None = None, bins: int = DEFAULT_BINS,
              alpha: float = 0.05, random_state: int | None = 0) -> dict[str, Any]:
    """All metrics of ``z`` (N, L) for ``a`` (N, K) as a JSON-serializable dict.

    Keys: ``n_samples``, ``latent_dim``, ``attributes`` (names), ``intended_dims``,
    ``random_state``, ``scores`` (a flat name → float table: ``interpretability``,
    ``interpretability_intended``, ``mig_knn``, ``mig_binned``, ``sap``, ``scc``,
    ``modularity_binned``, ``modularity_binned_weighted``, ``modularity_knn``,
    ``dci_disentanglement``,
    ``dci_completeness``, ``dci_informativeness``), then the full results:
    ``interpretability``, ``mig`` ({"knn", "binned"}), ``sap``, ``scc``, ``modularity``
    ({"binned", "knn"}), ``dci``. The values equal those of the single functions called with
    the same arguments; the kNN and binned MI matrices are computed once and shared.
    """
    _check_estimator("binned", bins)
    z, a, names = _prepare(z, a, names)
    dims = _intended_dims(intended, a.shape[1], z.shape[1])
    mi_knn, h_knn = _knn_mi(z, a, random_state), _knn_entropy(a, random_state)
    mi_bin, h_bin = _binned_mi(z, a, bins), _binned_entropy(a, bins)

    interp = _interpretability_from(z, a, names, dims, mi_knn)
    mig_knn = _mig_from(mi_knn, h_knn, names, "knn", None)
    mig_bin = _mig_from(mi_bin, h_bin, names, "binned", bins)
    sap_res = sap(z, a, names)
    scc_res = spearman_score(z, a, names, alpha=alpha)
    mod_bin = _modularity_from(mi_bin, "binned", bins)
    mod_knn = _modularity_from(mi_knn, "knn", None)
    dci_res = dci(z, a, names, random_state=random_state)
    scores = {
        "interpretability": interp.score,
        "interpretability_intended": interp.intended_score,
        "mig_knn": mig_knn.score,
        "mig_binned": mig_bin.score,
        "sap": sap_res.score,
        "scc": scc_res.score,
        "modularity_binned": mod_bin.score,
        "modularity_binned_weighted": mod_bin.weighted_score,
        "modularity_knn": mod_knn.score,
        "dci_disentanglement": dci_res.disentanglement,
        "dci_completeness": dci_res.completeness,
        "dci_informativeness": dci_res.informativeness,
    }
    return {
        "n_samples": int(z.shape[0]),
        "latent_dim": int(z.shape[1]),
        "attributes": list(names),
        "intended_dims": [int(d) for d in dims],
        "random_state": random_state,
        "scores": {k: float(v) for k, v in scores.items()},
        "interpretability": interp.to_dict(),
        "mig": {"knn": mig_knn.to_dict(), "binned": mig_bin.to_dict()},
        "sap": sap_res.to_dict(),
        "scc": scc_res.to_dict(),
        "modularity": {"binned": mod_bin.to_dict(), "knn": mod_knn.to_dict()},
        "dci": dci_res.to_dict(),
    }


def _interpretability_from(z: np.ndarray, a: np.ndarray, names: list[str], dims: list[int],
                           mi: np.ndarray) -> InterpretabilityResult:
    best = np.argmax(mi, axis=0)
    r2_best = np.array([_r2_1d(z[:, r], a[:, k]) for k, r in enumerate(best)])
    r2_intended = np.array([_r2_1d(z[:, r], a[:, k]) for k, r in enumerate(dims)])
    return InterpretabilityResult(
        score=float(np.mean(r2_best)),
        per_attribute=_by_name(names, r2_best),
        best_dims=dict(zip(names, (int(r) for r in best))),
        intended_dims=dict(zip(names, dims)),
        intended_ok={n: bool(r == d) for n, r, d in zip(names, best, dims)},
        intended_r2=_by_name(names, r2_intended),
        intended_score=float(np.mean(r2_intended)),
        mutual_information=mi)


def _mig_from(mi: np.ndarray, entropy: np.ndarray, names: list[str], estimator: str,
              bins: int | None) -> MIGResult:
    for name, h in zip(names, entropy):
        if not h > 0:
            raise MetricInputError(f"attribute {name!r} has zero estimated entropy ({estimator} "
                                   "estimator); MIG is undefined for it")
    gaps, top = _top_two_gaps(mi)
    per_attr = gaps / entropy
    return MIGResult(score=float(np.mean(per_attr)), estimator=estimator, bins=bins,
                     per_attribute=_by_name(names, per_attr), top_dims=dict(zip(names, top)),
                     entropy=_by_name(names, entropy), mutual_information=mi)


def _modularity_from(mi: np.ndarray, estimator: str, bins: int | None) -> ModularityResult:
    n_dims, n_attr = mi.shape
    if n_attr == 1:
        per_dim = np.ones(n_dims)
    else:
        sq = mi ** 2
        theta = sq.max(axis=1)
        per_dim = np.zeros(n_dims)
        live = theta > 0
        per_dim[live] = 1.0 - (sq[live].sum(axis=1) - theta[live]) / (theta[live] * (n_attr - 1))
    weights = np.max(mi ** 2, axis=1)
    weighted = float(weights @ per_dim / weights.sum()) if weights.sum() > 0 else 0.0
    return ModularityResult(score=float(np.mean(per_dim)), weighted_score=weighted,
                            estimator=estimator, bins=bins, per_dim=per_dim,
                            mutual_information=mi)


def _knn_mi(z: np.ndarray, a: np.ndarray, random_state: int | None) -> np.ndarray:
    """kNN MI(z_r; a_k) (L, K) from z-scored columns."""
    from sklearn.feature_selection import mutual_info_regression

    zs, as_ = _standardize(z), _standardize(a)
    return np.stack([mutual_info_regression(zs, as_[:, k], discrete_features=False,
                                            n_neighbors=KNN_NEIGHBORS,
                                            random_state=random_state)
                     for k in range(a.shape[1])], axis=1)


def _knn_entropy(a: np.ndarray, random_state: int | None) -> np.ndarray:
    """AR-VAE's H(a_k) := kNN MI(a_k; a_k), (K,)."""
    from sklearn.feature_selection import mutual_info_regression

    as_ = _standardize(a)
    return np.array([mutual_info_regression(as_[:, k:k + 1], as_[:, k], discrete_features=False,
                                            n_neighbors=KNN_NEIGHBORS,
                                            random_state=random_state)[0]
                     for k in range(a.shape[1])])


def _discretize(x: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin index per column (values 1..bins), as disentanglement_lib."""
    out = np.empty(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        edges = np.histogram(x[:, j], bins)[1]
        out[:, j] = np.digitize(x[:, j], edges[:-1])
    return out


def _binned_mi(z: np.ndarray, a: np.ndarray, bins: int) -> np.ndarray:
    from sklearn.metrics import mutual_info_score

    zb, ab = _discretize(z, bins), _discretize(a, bins)
    return np.array([[mutual_info_score(ab[:, k], zb[:, r]) for k in range(a.shape[1])]
                     for r in range(z.shape[1])])


def _binned_entropy(a: np.ndarray, bins: int) -> np.ndarray:
    from sklearn.metrics import mutual_info_score

    ab = _discretize(a, bins)
    return np.array([mutual_info_score(ab[:, k], ab[:, k]) for k in range(a.shape[1])])


def _top_two_gaps(m: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per column of ``m`` (L, K): largest minus second largest, and their row indices."""
    order = np.argsort(-m, axis=0, kind="stable")
    cols = np.arange(m.shape[1])
    first = m[order[0], cols]
    if m.shape[0] == 1:
        return first.copy(), [(int(r), -1) for r in order[0]]
    second = m[order[1], cols]
    return first - second, [(int(r1), int(r2)) for r1, r2 in zip(order[0], order[1])]


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in ``base`` of each row of non-negative ``p``, normalized per row."""
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def _r2_1d(x: np.ndarray, y: np.ndarray) -> float:
    """In-sample R² of least-squares y ≈ αx + β (= squared Pearson correlation)."""
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy = float(xc @ xc), float(yc @ yc)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return float(min(1.0, (xc @ yc) ** 2 / (sxx * syy)))


def _standardize(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance; constant columns become zeros."""
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x - x.mean(axis=0)) / std


def _by_name(names: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, values)}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_estimator(estimator: str, bins: int) -> None:
    if estimator not in _ESTIMATORS:
        raise MetricInputError(f"estimator={estimator!r} is unknown; use 'knn' or 'binned'")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise MetricInputError(f"bins={bins!r} must be an integer ≥ 2")


def _as_matrix(x: Any, what: str, allow_1d: bool = False) -> np.ndarray:
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetricInputError(f"{what} must be a numeric array") from None
    if allow_1d and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        shape = "(N, K) attributes" if allow_1d else "(N, L) latents"
        raise MetricInputError(f"{what} has shape {arr.shape}; expected a 2-D {shape} array")
    if arr.shape[1] == 0:
        raise MetricInputError(f"{what} has shape {arr.shape}: no columns")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise MetricInputError(f"{what} has {int(bad.sum())} NaN/inf values (first at row "
                               f"{int(rows[0])}, column {int(cols[0])})")
    return arr


def _prepare(z: Any, a: Any, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray,
                                                                   list[str]]:
    """Validated float64 copies of z (N, L) and a (N, K), and the K attribute names."""
    z = _as_matrix(z, "z")
    a = _as_matrix(a, "a", allow_1d=True)
    if z.shape[0] != a.shape[0]:
        raise MetricInputError(f"z has {z.shape[0]} rows but a has {a.shape[0]}; "
                               "each row must be the same sample")
    if z.shape[0] < MIN_SAMPLES:
        raise MetricInputError(f"only {z.shape[0]} samples; the metrics need at least "
                               f"{MIN_SAMPLES}")
    n_attr = a.shape[1]
    if names is None:
        names = [f"attr{k}" for k in range(n_attr)]
    elif isinstance(names, str):
        raise MetricInputError("names must be a sequence of attribute names, not one string")
    names = [str(n) for n in names]
    if len(names) != n_attr:
        raise MetricInputError(f"{len(names)} names for {n_attr} attribute columns")
    if len(set(names)) != n_attr:
        raise MetricInputError(f"attribute names are not unique: {names}")
    for k in np.flatnonzero(np.ptp(a, axis=0) == 0):
        raise MetricInputError(f"attribute {names[k]!r} (column {k}) is constant "
                               f"(= {float(a[0, k]):g}); no metric is defined for it")
    return z, a, names


def _intended_dims(intended: Sequence[int] | None, n_attr: int, n_dims: int) -> list[int]:
    if intended is None:
        if n_attr > n_dims:
            raise MetricInputError(f"{n_attr} attributes but only {n_dims} latent dims: the "
                                   "default intended dims 0..K-1 do not exist; pass intended=")
        return list(range(n_attr))
    if isinstance(intended, (str, bytes)):
        raise MetricInputError("intended must be a sequence of latent dim indices")
    dims = list(intended)
    if len(dims) != n_attr:
        raise MetricInputError(f"intended has {len(dims)} entries for {n_attr} attributes")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d < n_dims:
            raise MetricInputError(f"intended dim {d!r} is not an index in 0..{n_dims - 1}")
    if len(set(dims)) != len(dims):
        raise MetricInputError(f"intended dims repeat: {dims}; each attribute needs its own dim")
    return [int(d) for d in dims]
