"""Controls for the disentanglement metrics (SPEC §4): known factors, noise, permutations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from AttriVAELib.core.errors import InputError
from AttriVAELib.evaluate import metrics as M

N, K = 500, 4
NAMES = ["lv_volume", "myo_volume", "wall_thickness", "ef"]


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(N, K))


@pytest.fixture(scope="module")
def true_z(factors: np.ndarray) -> np.ndarray:
    """The factors plus tiny noise, then 4 pure-noise nuisance dims: (N, 8)."""
    rng = np.random.default_rng(1)
    return np.hstack([factors + 1e-3 * rng.standard_normal((N, K)),
                      rng.standard_normal((N, 4))])


@pytest.fixture(scope="module")
def random_z() -> np.ndarray:
    return np.random.default_rng(2).standard_normal((N, K))


@pytest.fixture(scope="module")
def rotated_z(true_z: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((K, K)))
    return np.hstack([true_z[:, :K] @ q, true_z[:, K:]])


@pytest.fixture(scope="module")
def summaries(factors, true_z, random_z, rotated_z) -> dict[str, dict]:
    return {name: M.summarize(z, factors, names=NAMES)
            for name, z in (("true", true_z), ("random", random_z), ("rotated", rotated_z))}


def test_true_factors_score_high(summaries: dict[str, dict]) -> None:
    s = summaries["true"]["scores"]
    assert s["interpretability"] > 0.95 and s["interpretability_intended"] > 0.95
    assert s["scc"] > 0.95
    assert s["sap"] > 0.9
    assert s["mig_knn"] > 0.85
    # The plug-in binned MI of independent factors is biased upwards (≈ 0.36 nats at
    # N = 500, 20×20 bins), which lowers I⁽¹⁾ − I⁽²⁾ even for exact factors.
    assert s["mig_binned"] > 0.7
    # Noise dims have ≈ equal MI with every attribute; only the weighted mean stays high.
    assert s["modularity_binned_weighted"] > 0.9
    assert s["dci_disentanglement"] > 0.9
    assert s["dci_completeness"] > 0.9
    assert s["dci_informativeness"] > 0.95
    assert all(summaries["true"]["interpretability"]["intended_ok"].values())


def test_true_factors_without_nuisance_are_modular(factors, true_z) -> None:
    res = M.modularity(true_z[:, :K], factors)
    assert res.estimator == "binned" and res.bins == 20
    assert res.score > 0.95


def test_random_latents_score_low(summaries: dict[str, dict]) -> None:
    s = summaries["random"]["scores"]
    for key in ("interpretability", "mig_knn", "mig_binned", "sap", "scc",
                "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert s[key] < 0.1, key
    assert s["modularity_binned"] < 0.3
    assert s["modularity_binned_weighted"] < 0.3


def test_mixing_lowers_disentanglement(summaries: dict[str, dict]) -> None:
    ident, rot = summaries["true"]["scores"], summaries["rotated"]["scores"]
    margins = {"mig_knn": 0.5, "mig_binned": 0.5, "sap": 0.2, "dci_disentanglement": 0.2,
               "modularity_binned_weighted": 0.1,
               # Half of the dims are noise in both, which dilutes the plain mean.
               "modularity_binned": 0.05}
    for key, margin in margins.items():
        assert rot[key] < ident[key] - margin, key
    assert rot["dci_informativeness"] > 0.9


def test_permuted_dims_fail_intended_check(factors, true_z) -> None:
    z = true_z[:, [1, 0, 2, 3, 4, 5, 6, 7]]
    res = M.interpretability(z, factors, names=NAMES)
    assert res.score > 0.95
    assert res.intended_ok == {"lv_volume": False, "myo_volume": False,
                               "wall_thickness": True, "ef": True}
    assert res.best_dims["lv_volume"] == 1 and res.best_dims["myo_volume"] == 0
    assert res.intended_r2["lv_volume"] < 0.05 and res.intended_score < 0.6
    assert M.spearman_score(z, factors).score > 0.95
    assert M.sap(z, factors).score > 0.9
    ok = M.interpretability(z, factors, intended=[1, 0, 2, 3])
    assert all(ok.intended_ok.values()) and ok.intended_score > 0.95


def test_monotone_transform_keeps_scc(factors, true_z) -> None:
    z = true_z.copy()
    z[:, 0] = np.exp(5.0 * z[:, 0])
    before = M.spearman_score(true_z, factors)
    after = M.spearman_score(z, factors)
    assert after.score > 0.99
    assert after.score == pytest.approx(before.score, abs=1e-12)
    assert M.interpretability(z, factors).per_attribute["attr0"] < 0.95


def test_summarize_is_json_and_matches_single_functions(factors, true_z, summaries) -> None:
    s = summaries["true"]
    json.dumps(s, allow_nan=False)
    assert s["attributes"] == NAMES and s["intended_dims"] == [0, 1, 2, 3]
    assert s["latent_dim"] == 8 and s["n_samples"] == N
    assert s["mig"]["knn"]["estimator"] == "knn" and s["mig"]["knn"]["bins"] is None
    assert s["mig"]["binned"]["estimator"] == "binned" and s["mig"]["binned"]["bins"] == 20
    sc = s["scores"]
    assert sc["mig_knn"] == M.mig(true_z, factors, estimator="knn").score
    assert sc["mig_binned"] == M.mig(true_z, factors, estimator="binned").score
    assert sc["interpretability"] == M.interpretability(true_z, factors).score
    assert sc["modularity_knn"] == M.modularity(true_z, factors, estimator="knn").score
    assert sc["dci_disentanglement"] == M.dci(true_z, factors).disentanglement
    assert np.asarray(s["sap"]["score_matrix"]).shape == (8, K)
    assert s["mig"]["knn"]["top_dims"]["ef"][0] == 3


def test_interpretability_r2_is_linear_regression_score(factors, random_z) -> None:
    from sklearn.linear_model import LinearRegression

    z = random_z + 0.5 * factors
    res = M.interpretability(z, factors)
    for k, name in enumerate(res.best_dims):
        r = res.best_dims[name]
        x = z[:, r:r + 1]
        expected = LinearRegression().fit(x, factors[:, k]).score(x, factors[:, k])
        assert res.per_attribute[name] == pytest.approx(expected, abs=1e-12)


def test_sap_hand_computed() -> None:
    a1 = np.array([1, 1, 1, 1, 1, -1, -1, -1, -1, -1], float)
    a2 = np.array([1, 1, 1, 1, -1, -1, -1, -1, 1, -1], float)
    # Both have mean 0 and sample variance 10/9; Σ a1·a2 = 6, so Cov = 6/9 and S = 0.36.
    z = np.stack([3 * a1 + 2, -a2, np.full(10, 7.0)], axis=1)
    res = M.sap(z, np.stack([a1, a2], axis=1))
    np.testing.assert_allclose(res.score_matrix, [[1, 0.36], [0.36, 1], [0, 0]], atol=1e-12)
    assert res.per_attribute == pytest.approx({"attr0": 0.64, "attr1": 0.64})
    assert res.score == pytest.approx(0.64)
    assert res.top_dims == {"attr0": (0, 1), "attr1": (1, 0)}


def test_scc_hand_computed() -> None:
    a = np.arange(1.0, 11.0)
    # d = (4, 4, 1, -1, -4, -4, 0, 0, 0, 0): Σd² = 66, ρ = 1 − 6·66/(10·99) = 0.6.
    z_weak = np.array([5, 6, 4, 3, 1, 2, 7, 8, 9, 10], float)
    # One adjacent swap: Σd² = 2, ρ = 1 − 12/990.
    z_strong = np.array([2, 1, 3, 4, 5, 6, 7, 8, 9, 10], float)
    t = 0.6 * math.sqrt(8 / (1 - 0.36))
    p_weak = 2 * stats.t.sf(t, df=8)
    assert 0.05 < p_weak < 0.1

    weak = M.spearman_score(z_weak[:, None], a)
    assert weak.rho[0, 0] == pytest.approx(0.6)
    assert weak.p_values[0, 0] == pytest.approx(p_weak)
    assert weak.score == 0.0
    assert M.spearman_score(z_weak[:, None], a, alpha=0.1).score == pytest.approx(0.6)

    both = M.spearman_score(np.stack([z_weak, -z_strong, np.ones(10)], axis=1), a)
    np.testing.assert_allclose(both.rho[:, 0], [0.6, -(1 - 12 / 990), 0.0])
    assert both.p_values[2, 0] == 1.0
    assert both.score == pytest.approx(1 - 12 / 990)
    assert both.best_dims == {"attr0": 1}


def test_modularity_formula_on_a_given_mi_matrix() -> None:
    mi = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 1.0]])
    res = M._modularity_from(mi, "binned", 20)
    # Row 3: θ = 4, 1 − (5 − 4)/(4·1) = 0.75; the zero row scores 0 and stays in the mean.
    np.testing.assert_allclose(res.per_dim, [1.0, 0.0, 0.0, 0.75])
    assert res.score == pytest.approx(1.75 / 4)
    assert res.weighted_score == pytest.approx((1 + 0 + 0 + 4 * 0.75) / 6)
    single = M.modularity(np.random.default_rng(0).normal(size=(50, 3)), np.arange(50.0))
    assert single.score == 1.0


def test_binned_entropy_and_self_information() -> None:
    a = np.random.default_rng(4).uniform(size=(400, 1))
    res = M.mig(np.hstack([a, a ** 3]), a, estimator="binned", bins=10)
    # a and a³ bin differently, but binned a itself carries exactly H(a).
    assert res.mutual_information[0, 0] == pytest.approx(res.entropy["attr0"])
    assert res.per_attribute["attr0"] > 0.0


def test_dci_with_explicit_test_split_and_dead_dim(factors, true_z) -> None:
    z = np.hstack([true_z, np.zeros((N, 1))])
    res = M.dci(z[:400], factors[:400], z_test=z[400:], a_test=factors[400:],
                n_estimators=50)
    assert (res.n_train, res.n_test) == (400, 100)
    assert res.importance.shape == (9, K)
    assert res.importance[8].sum() == 0.0 and res.dim_weights[8] == 0.0
    assert res.score == res.disentanglement > 0.9
    assert min(res.per_attribute_informativeness.values()) > 0.9
    one = M.dci(true_z[:, :1], factors[:, 0])
    assert one.completeness == 1.0 and one.per_dim_disentanglement.tolist() == [1.0]


def test_constant_latent_dim_is_allowed(factors, true_z) -> None:
    z = np.hstack([true_z[:, :K], np.full((N, 1), 3.0)])
    assert M.sap(z, factors).score_matrix[K].tolist() == [0.0] * K
    assert M.spearman_score(z, factors).score > 0.95
    res = M.modularity(z, factors)
    assert res.per_dim[K] == 0.0
    assert M.mig(z, factors, estimator="binned").mutual_information[K].tolist() == [0.0] * K


@pytest.mark.parametrize("call, match", [
    (lambda z, a: M.sap(z[:, 0], a), "2-D"),
    (lambda z, a: M.sap(z, a[:-1]), "rows"),
    (lambda z, a: M.sap(z[:9], a[:9]), "at least 10"),
    (lambda z, a: M.sap(np.where(np.arange(len(z))[:, None] == 3, np.nan, z), a), "NaN"),
    (lambda z, a: M.sap(z, np.hstack([a, np.ones((len(a), 1))])), "'attr4'.*constant"),
    (lambda z, a: M.sap(z, a, names=["x"]), "1 names for 4"),
    (lambda z, a: M.sap(z, a, names=["x", "x", "y", "z"]), "not unique"),
    (lambda z, a: M.sap([["a"] * 4] * 20, a), "numeric"),
    (lambda z, a: M.interpretability(z[:, :2], a), "only 2 latent dims"),
    (lambda z, a: M.interpretability(z, a, intended=[0, 1, 2, 99]), "99"),
    (lambda z, a: M.interpretability(z, a, intended=[0, 0, 1, 2]), "repeat"),
    (lambda z, a: M.interpretability(z, a, intended=[0, 1]), "2 entries for 4"),
    (lambda z, a: M.mig(z, a, estimator="ksg"), "estimator"),
    (lambda z, a: M.mig(z, a, estimator="binned", bins=1), "bins"),
    (lambda z, a: M.spearman_score(z, a, alpha=0), "alpha"),
    (lambda z, a: M.dci(z, a, z_test=z), "both"),
    (lambda z, a: M.dci(z, a, z_test=z[:, :2], a_test=a), "latent dims"),
    (lambda z, a: M.dci(z, a, test_fraction=1.5), "test_fraction"),
])
def test_bad_inputs_raise_clear_errors(call, match, factors, true_z) -> None:
    with pytest.raises(M.MetricInputError, match=match) as info:
        call(true_z[:100], factors[:100])
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
