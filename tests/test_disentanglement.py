"""The disentanglement metrics (vaecli/studies/disentanglement.py) on known answers.

Three synthetic representations of factors of sizes (3, 6, 10, 8, 8), with no images or model: the factors
themselves (standardized), a random rotation of those, and pure noise. The sample counts are far below
disentanglement_lib's defaults (10000 train / 5000 test or eval) to keep the file fast: 600 train and 300 test
rows for MIG, SAP and DCI, 500 train and 250 eval points for the BetaVAE and FactorVAE scores.
"""

import math
from collections.abc import Callable

import numpy as np
import pytest

from vaecli.errors import ConfigError
from vaecli.studies import disentanglement as d

SIZES = (3, 6, 10, 8, 8)
K = len(SIZES)
CHANCE = 1 / K  # of the BetaVAE and FactorVAE scores: the label is the fixed factor, uniform over K
N_TRAIN, N_TEST = 600, 300
FEW = {"num_train": 500, "num_eval": 250}  # the library's defaults are 10000 and 5000
FEW_VAR = {**FEW, "num_variance_estimate": 2000}  # the library's default is 10000

_sizes = np.array(SIZES)
_mean, _std = (_sizes - 1) / 2, np.sqrt((_sizes**2 - 1) / 12)  # of a uniform class in range(size)
_rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((K, K)))[0]


def identity(factors: np.ndarray) -> np.ndarray:
    return (factors - _mean) / _std


def rotation(factors: np.ndarray) -> np.ndarray:
    return identity(factors) @ _rotation


def noise_represent(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda factors: rng.standard_normal((len(factors), K))


REPRESENT = {"identity": identity, "rotation": rotation, "noise": noise_represent(7)}


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, float]]:
    """Every metric of each representation, computed once."""
    out = {}
    f_train, f_test = d.sample_factors(SIZES, N_TRAIN, 0), d.sample_factors(SIZES, N_TEST, 1)
    for name, represent in REPRESENT.items():
        c_train, c_test = represent(f_train), represent(f_test)
        out[name] = {
            "mig": d.mig(c_train, f_train),
            "sap": d.sap(c_train, f_train, c_test, f_test),
            "sap_continuous": d.sap(c_train, f_train, c_test, f_test, continuous_factors=True),
            **d.dci(c_train, f_train, c_test, f_test, seed=0),
            "beta_vae": d.beta_vae_score(represent, SIZES, 0, **FEW),
            "factor_vae": d.factor_vae_score(represent, SIZES, 0, **FEW_VAR),
        }
    return out


def test_the_factors_themselves_score_high(scores: dict[str, dict[str, float]]) -> None:
    s = scores["identity"]
    # measured: mig 0.979, beta_vae 1.0, factor_vae 1.0, dci 1.0 / 1.0 / 1.0, sap 0.214, sap_continuous 0.9975
    assert s["beta_vae"] >= 0.99  # the fixed factor's feature is exactly 0, every other one is not
    assert s["factor_vae"] >= 0.99  # the fixed factor's own dimension has variance 0 in its batch
    # MIG < 1: with 600 rows the plug-in MI of a code with the factors it is independent of is not 0 (bias)
    assert s["mig"] >= 0.95
    # DCI: each factor's trees split on its own dimension only, so R is diagonal up to 1e-11 and every tree is exact
    assert s["dci_disentanglement"] >= 0.99 and s["dci_completeness"] >= 0.99 and s["dci_informativeness"] >= 0.99
    # SAP (discrete, as sap_score.gin) is low even here: a LinearSVC(C=0.01) one-vs-rest on one dimension
    # carves out the end classes but not the middle ones (the 3-class factor's own dimension predicts it 100%,
    # the 10-class factor's about 21%), while every other dimension sits at chance: the gap is small for the
    # many-class factors. The squared correlation (continuous_factors=True) sees the copy: 1 minus noise.
    assert s["sap"] >= 0.18
    assert s["sap_continuous"] >= 0.99


def test_a_rotation_scores_much_lower_but_stays_informative(scores: dict[str, dict[str, float]]) -> None:
    s, best = scores["rotation"], scores["identity"]
    # measured: mig 0.289, sap 0.094, dci_disentanglement 0.349, dci_completeness 0.371, factor_vae 0.776,
    # beta_vae 0.892, dci_informativeness 0.764
    assert s["mig"] <= best["mig"] - 0.5
    assert s["sap"] <= best["sap"] - 0.08
    assert s["sap_continuous"] <= best["sap_continuous"] - 0.5
    assert s["dci_disentanglement"] <= best["dci_disentanglement"] - 0.4
    assert s["dci_completeness"] <= best["dci_completeness"] - 0.4
    assert s["factor_vae"] <= best["factor_vae"] - 0.15
    # the rotation loses no information: the trees on all five dimensions still predict the factors well
    # (well above the 0.16 of noise, below 1 with 600 rows), and the BetaVAE score's linear classifier on the
    # mean absolute differences still tells the fixed factor apart most of the time
    assert s["dci_informativeness"] >= 0.65
    assert s["beta_vae"] >= 0.8


def test_noise_scores_near_zero_and_chance(scores: dict[str, dict[str, float]]) -> None:
    s = scores["noise"]
    # measured: mig 0.003, sap 0.013, sap_continuous 0.002, dci_disentanglement 0.001, dci_completeness 0.001,
    # beta_vae 0.196, factor_vae 0.212 (chance 0.2), dci_informativeness 0.173 (chance: the mean of 1/size, 0.170)
    assert s["mig"] <= 0.03 and s["sap"] <= 0.04 and s["sap_continuous"] <= 0.02
    assert s["dci_disentanglement"] <= 0.05 and s["dci_completeness"] <= 0.05
    assert abs(s["beta_vae"] - CHANCE) <= 0.08 and abs(s["factor_vae"] - CHANCE) <= 0.08
    assert abs(s["dci_informativeness"] - np.mean(1 / _sizes)) <= 0.06


def test_discretize_is_np_histogram_and_digitize() -> None:
    codes = np.array([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0], [0.26, 5.0], [0.25, 5.0]])
    # 4 bins over [0, 1]: edges 0, .25, .5, .75, 1; the maximum goes in the last bin, an edge in the bin above it
    assert d.discretize(codes, num_bins=4)[:, 0].tolist() == [1, 3, 4, 2, 2]
    assert (d.discretize(codes, num_bins=4)[:, 1] == d.discretize(codes, num_bins=4)[0, 1]).all()  # constant
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 3))
    expected = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in x.T], axis=1)
    assert np.array_equal(d.discretize(x), expected)
    assert d.discretize(x).min() == 1 and d.discretize(x).max() == 20


def test_mutual_information_by_hand() -> None:
    codes = np.array([[0.0], [0.0], [1.0], [1.0]])
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert np.allclose(d.mutual_information(codes, factors), [[math.log(2), 0.0]])
    # joint (factor, code bin): (0, lo), (0, hi), (1, hi): MI = 1/3 [ln 3/2 + ln 3/4 + ln 3/2] = 1/3 ln 27/16
    m = d.mutual_information(np.array([[0.0], [1.0], [1.0]]), np.array([[0], [0], [1]]))
    assert m.shape == (1, 1) and m[0, 0] == pytest.approx(math.log(27 / 16) / 3)
    h = d.factor_entropies(np.array([[0, 0], [0, 0], [1, 0], [1, 1]]))
    assert np.allclose(h, [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))])


def test_twenty_bins_merge_a_forty_class_factor_in_pairs() -> None:
    # dSprites' orientation: 40 classes in 20 bins of width 39/20 < 2, two classes each: MI = ln 20 < H = ln 40
    factor = np.repeat(np.arange(40), 5)[:, None]
    assert d.mutual_information(factor.astype(float), factor)[0, 0] == pytest.approx(math.log(20))
    assert d.factor_entropies(factor)[0] == pytest.approx(math.log(40))


def test_mig_by_hand() -> None:
    # a full grid of a (4 classes) x b (2 classes), 3 times over; codes: a, b, and a // 2 (half of a)
    a, b = (g.ravel() for g in np.meshgrid(np.arange(4), np.arange(2), indexing="ij"))
    factors = np.tile(np.stack([a, b], axis=1), (3, 1))
    codes = np.stack([factors[:, 0], factors[:, 1], factors[:, 0] // 2], axis=1).astype(float)
    # a: MI ln 4 (its copy) then ln 2 (its half): gap ln 2 / ln 4 = 1/2; b: ln 2 then 0: 1; the mean is 3/4
    assert d.mig(codes, factors) == pytest.approx(0.75)
    assert d.mig(codes[:, :2], factors) == pytest.approx(1.0)


def test_single_class_factors_are_left_out() -> None:
    rng = np.random.default_rng(5)
    f_train, f_test = d.sample_factors((3, 4), 300, rng), d.sample_factors((3, 4), 150, rng)
    c_train, c_test = f_train + 0.1 * rng.standard_normal(f_train.shape), f_test.astype(float)
    with_constant = [np.column_stack([f, np.zeros(len(f), dtype=int)]) for f in (f_train, f_test)]
    assert d.mig(c_train, with_constant[0]) == d.mig(c_train, f_train)  # instead of dividing by entropy 0
    assert d.sap(c_train, with_constant[0], c_test, with_constant[1]) == d.sap(c_train, f_train, c_test, f_test)
    assert d.dci(c_train, with_constant[0], c_test, with_constant[1]) == d.dci(c_train, f_train, c_test, f_test)
    importance = d.dci_importance_matrix(c_train, with_constant[0])
    assert importance.shape == (2, 3) and (importance[:, 2] == 0).all() and np.allclose(importance[:, :2].sum(0), 1)
    represent = lambda f: f[:, :2] + 0.01  # noqa: E731
    assert d.factor_vae_score(represent, (3, 4, 1), 0, **FEW_VAR) == 1.0
    assert d.beta_vae_score(represent, (3, 4, 1), 0, **FEW) >= 0.99
    with pytest.raises(ConfigError, match="single class"):
        d.mig(c_train, np.zeros((300, 2), dtype=int))
    with pytest.raises(ConfigError, match="single class"):
        d.factor_vae_score(represent, (1, 1), 0)


def test_factor_vae_prunes_dead_dimensions() -> None:
    # a constant code dimension (std 0 < 0.05) is pruned, not divided by; all dimensions dead scores 0.0
    with_dead = lambda f: np.column_stack([identity(f), np.full(len(f), 3.0)])  # noqa: E731
    assert d.factor_vae_score(with_dead, SIZES, 0, **FEW_VAR) == 1.0
    assert d.factor_vae_score(lambda f: np.zeros((len(f), 4)), SIZES, 0, **FEW_VAR) == 0.0


def test_the_same_seed_gives_the_same_score() -> None:
    f_train, f_test = d.sample_factors(SIZES, 200, 0), d.sample_factors(SIZES, 100, 1)
    c_train, c_test = rotation(f_train), rotation(f_test)
    f_train, f_test = f_train[:, :2], f_test[:, :2]  # 9 classes, not 35: a quarter of the trees
    assert np.array_equal(d.sample_factors(SIZES, 50, 4), d.sample_factors(SIZES, 50, np.random.default_rng(4)))
    assert d.dci(c_train, f_train, c_test, f_test, 3) == d.dci(c_train, f_train, c_test, f_test, 3)
    assert d.sap(c_train, f_train, c_test, f_test, seed=3) == d.sap(c_train, f_train, c_test, f_test, seed=3)
    few = {"num_train": 200, "num_eval": 100}
    assert d.beta_vae_score(rotation, SIZES, 3, **few) == d.beta_vae_score(rotation, SIZES, 3, **few)
    fvae = [d.factor_vae_score(rotation, SIZES, s, **few, num_variance_estimate=500) for s in (3, 3, 4)]
    assert fvae[0] == fvae[1] != fvae[2]


def test_bad_shapes_raise_config_error() -> None:
    codes, factors = np.zeros((10, 3)), np.zeros((10, 2), dtype=int)
    factors[5:] = 1
    with pytest.raises(ConfigError, match="N must match"):
        d.mig(codes, factors[:9])
    with pytest.raises(ConfigError, match=r"\(N, H\)"):
        d.mutual_information(np.zeros(10), factors)
    with pytest.raises(ConfigError, match="at least 2 code dimensions"):
        d.mig(codes[:, :1], factors)
    with pytest.raises(ConfigError, match="disagree"):
        d.sap(codes, factors, codes[:, :2], factors)
    with pytest.raises(ConfigError, match="N must match"):
        d.dci(codes, factors, codes, factors[:4])
    with pytest.raises(ConfigError, match="integer class labels"):
        d.factor_entropies(factors + 0.5)
    with pytest.raises(ConfigError, match="NaN"):
        d.discretize(np.full((3, 2), np.nan))
    with pytest.raises(ConfigError, match="represent must map"):
        d.beta_vae_score(lambda f: np.zeros((len(f) + 1, 2)), SIZES, 0, **FEW)
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        d.factor_vae_score(identity, SIZES, 0, batch_size=1)
