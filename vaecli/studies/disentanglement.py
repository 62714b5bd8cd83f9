"""The five standard disentanglement metrics, as pure functions over numpy arrays.

Each follows google-research/disentanglement_lib (files under disentanglement_lib/evaluation/metrics/, cited at
each function) with its unsupervised_study_v1 defaults (config/unsupervised_study_v1/metric_configs/*.gin):
BetaVAE and FactorVAE scores 10000 training and 5000 evaluation points of batches of 64 (FactorVAE: 10000 points
for the global variances, prune_dims.threshold = 0.05); MIG 20 histogram bins; SAP and DCI are given their
arrays here (the library draws 10000 training and 5000 test points for them).

Arrays are (N, H) codes and (N, K) integer factor classes, one row per sample (disentanglement_lib transposes
them). A factor with a single class in the array given (entropy 0, nothing to predict or disentangle) is left out
of every score: MIG would divide by its zero entropy and scikit-learn cannot fit a one-class predictor. If no
factor has two classes, the metric raises ConfigError.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.metrics import mutual_info_score  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from vaecli.choices import DISENTANGLEMENT_METRICS
from vaecli.errors import ConfigError

METRICS = DISENTANGLEMENT_METRICS
NUM_BINS = 20  # mig.gin: discretizer.num_bins
BATCH_SIZE = 64  # beta_vae.gin, factor_vae_metric.gin
NUM_TRAIN = 10000
NUM_EVAL = 5000
NUM_VARIANCE_ESTIMATE = 10000  # factor_vae_metric.gin
PRUNE_THRESHOLD = 0.05  # factor_vae_metric.gin: prune_dims.threshold, on the global standard deviation
_ROWS_PER_CALL = 8192  # rows of factors handed to `represent` at once

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
SeedLike = int | np.random.Generator
Represent = Callable[[Ints], npt.ArrayLike]
Sizes = Sequence[int] | Ints


def _generator(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _sklearn_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _codes(codes: npt.ArrayLike, name: str = "codes") -> Floats:
    array = np.asarray(codes, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ConfigError(f"{name} must be a non-empty (N, H) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} holds NaN or infinite values")
    return array


def _factors(factors: npt.ArrayLike, n: int, name: str = "factors") -> Ints:
    array = np.asarray(factors)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ConfigError(f"{name} must be an (N, K) array of classes, got shape {array.shape}")
    if array.shape[0] != n:
        raise ConfigError(f"{name} has {array.shape[0]} rows but the codes have {n}: N must match")
    if not np.issubdtype(array.dtype, np.integer):
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise ConfigError(f"{name} must hold integer class labels")
    return array.astype(np.int64)


def _pair(
    codes_train: npt.ArrayLike, factors_train: npt.ArrayLike, codes_test: npt.ArrayLike, factors_test: npt.ArrayLike
) -> tuple[Floats, Ints, Floats, Ints]:
    x, x_test = _codes(codes_train, "codes_train"), _codes(codes_test, "codes_test")
    y, y_test = _factors(factors_train, len(x), "factors_train"), _factors(factors_test, len(x_test), "factors_test")
    if x.shape[1] != x_test.shape[1] or y.shape[1] != y_test.shape[1]:
        shapes = f"codes {x.shape} vs {x_test.shape}, factors {y.shape} vs {y_test.shape}"
        raise ConfigError(f"train and test arrays disagree in H or K: {shapes}")
    return x, y, x_test, y_test


def _kept(two_or_more: npt.ArrayLike) -> Ints:
    """The indices of the factors marked as having two or more classes; ConfigError if there are none."""
    keep = np.flatnonzero(two_or_more)
    if len(keep) == 0:
        raise ConfigError("every factor has a single class: at least one needs two or more")
    return keep


def _varying(factors: Ints) -> Ints:
    return _kept([len(np.unique(column)) >= 2 for column in factors.T])


def discretize(codes: npt.ArrayLike, num_bins: int = NUM_BINS) -> Ints:
    """Each code dimension's histogram bin, 1..num_bins (default 20): (N, H) ints.

    utils.py `_histogram_discretize`: per dimension, np.histogram's `num_bins` equal-width edges over
    [min, max], then np.digitize against all edges but the last, so the maximum falls in bin num_bins.
    """
    array = _codes(codes)
    if num_bins < 1:
        raise ConfigError(f"num_bins must be at least 1, got {num_bins}")
    out = np.empty(array.shape, dtype=np.int64)
    for i, column in enumerate(array.T):
        out[:, i] = np.digitize(column, np.histogram(column, bins=num_bins)[1][:-1])
    return out


def mutual_information(codes: npt.ArrayLike, factors: npt.ArrayLike, num_bins: int = NUM_BINS) -> Floats:
    """Discrete mutual information, in nats, of each discretized code dimension and each factor: (H, K).

    utils.py `discrete_mutual_info` (sklearn.metrics.mutual_info_score) on `discretize(codes, num_bins)`,
    the matrix mig.py's MIG is taken from. A single-class factor's column is 0.
    """
    binned = discretize(codes, num_bins)
    y = _factors(factors, len(binned))
    return np.array([[mutual_info_score(factor, code) for factor in y.T] for code in binned.T], dtype=np.float64)


def factor_entropies(factors: npt.ArrayLike) -> Floats:
    """Each factor's empirical entropy in nats, as utils.py `discrete_entropy` (its MI with itself): (K,)."""
    y = _factors(factors, len(np.asarray(factors)))
    return np.array([mutual_info_score(factor, factor) for factor in y.T], dtype=np.float64)


def mig(codes: npt.ArrayLike, factors: npt.ArrayLike, num_bins: int = NUM_BINS) -> float:
    """Mutual information gap (mig.py `compute_mig`, "discrete_mig"), in [0, 1].

    For each factor, the largest minus the second largest MI with a code dimension (`mutual_information`,
    default 20 bins), divided by the factor's entropy; the mean over factors. Needs H >= 2. Single-class
    factors (entropy 0) are left out of the mean instead of dividing by zero.
    """
    m = mutual_information(codes, factors, num_bins)
    if m.shape[0] < 2:
        raise ConfigError(f"MIG needs at least 2 code dimensions, got {m.shape[0]}")
    y = _factors(factors, len(np.asarray(codes)))
    keep = _varying(y)
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0, keep] - top[1, keep]) / factor_entropies(y)[keep]))


def sap(
    codes_train: npt.ArrayLike,
    factors_train: npt.ArrayLike,
    codes_test: npt.ArrayLike,
    factors_test: npt.ArrayLike,
    continuous_factors: bool = False,
    seed: SeedLike = 0,
) -> float:
    """Separated attribute predictability (sap_score.py `compute_sap`, "SAP_score").

    Score matrix (H, K): with discrete factors (the default, as sap_score.gin), the test accuracy of a
    LinearSVC(C=0.01, class_weight="balanced") fit to one code dimension alone; with `continuous_factors`,
    the squared correlation of the dimension and the factor on the training arrays (0 where the dimension's
    variance is <= 1e-12; the test arrays are then unused). SAP is the mean over factors of the gap between the
    two largest scores. Needs H >= 2; single-class factors are left out. `seed` seeds the LinearSVCs.
    """
    x, y, x_test, y_test = _pair(codes_train, factors_train, codes_test, factors_test)
    if x.shape[1] < 2:
        raise ConfigError(f"SAP needs at least 2 code dimensions, got {x.shape[1]}")
    keep, rng = _varying(y), _generator(seed)
    scores = np.zeros((x.shape[1], len(keep)))
    for i, code in enumerate(x.T):
        for j, k in enumerate(keep):
            if continuous_factors:
                cov = np.cov(code, y[:, k], ddof=1)
                scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                svc = LinearSVC(C=0.01, class_weight="balanced", random_state=_sklearn_seed(rng))
                svc.fit(code[:, None], y[:, k])
                scores[i, j] = np.mean(svc.predict(x_test[:, i, None]) == y_test[:, k])
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def _fit_gbts(x: Floats, y: Ints, keep: Ints, rng: np.random.Generator) -> tuple[Floats, list[Any]]:
    importance = np.zeros((x.shape[1], y.shape[1]))
    models = []
    for k in keep:
        model = GradientBoostingClassifier(random_state=_sklearn_seed(rng))  # dci.py: the default GBT
        model.fit(x, y[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        models.append(model)
    return importance, models


def dci_importance_matrix(codes_train: npt.ArrayLike, factors_train: npt.ArrayLike, seed: SeedLike = 0) -> Floats:
    """(H, K) importance of each code dimension for predicting each factor (dci.py `compute_importance_gbt`).

    One GradientBoostingClassifier (scikit-learn defaults) per factor on all code dimensions; the column is its
    absolute feature_importances_ (summing to 1). A single-class factor's column is 0. `seed` seeds the trees.
    """
    x = _codes(codes_train, "codes_train")
    y = _factors(factors_train, len(x), "factors_train")
    return _fit_gbts(x, y, _varying(y), _generator(seed))[0]


def _one_minus_entropy(columns: Floats) -> Floats:
    """1 - entropy of each column normalised to a distribution, in base = its length (dci.py, with the +1e-11)."""
    if columns.shape[0] == 1:  # base 1 (one code, or one factor left): no spread; scipy would divide by log 1 = 0
        return np.ones(columns.shape[1])
    p = columns + 1e-11
    p = p / p.sum(axis=0, keepdims=True)
    return 1.0 + (p * np.log(p)).sum(axis=0) / np.log(columns.shape[0])


def _weights(importance: Floats, axis: int) -> Floats:
    if importance.sum() == 0.0:  # dci.py: no importance at all weighs every code (factor) equally
        importance = np.ones_like(importance)
    return importance.sum(axis=axis) / importance.sum()


def dci(
    codes_train: npt.ArrayLike,
    factors_train: npt.ArrayLike,
    codes_test: npt.ArrayLike,
    factors_test: npt.ArrayLike,
    seed: SeedLike = 0,
) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (dci.py `compute_dci`), each in [0, 1].

    From `dci_importance_matrix` R (H, K) over the factors with two or more classes: disentanglement is the sum
    over codes of (1 - entropy of R's row, base K) weighted by the row's share of R; completeness the sum over
    factors of (1 - entropy of R's column, base H) weighted by the column's share; informativeness the mean
    test accuracy of the trees ("informativeness_test"). Keys dci_disentanglement, dci_completeness,
    dci_informativeness.
    """
    x, y, x_test, y_test = _pair(codes_train, factors_train, codes_test, factors_test)
    keep = _varying(y)
    importance, models = _fit_gbts(x, y, keep, _generator(seed))
    r = importance[:, keep]
    accuracy = [np.mean(model.predict(x_test) == y_test[:, k]) for model, k in zip(models, keep, strict=True)]
    return {
        "dci_disentanglement": float(np.sum(_one_minus_entropy(r.T) * _weights(r, axis=1))),
        "dci_completeness": float(np.sum(_one_minus_entropy(r) * _weights(r, axis=0))),
        "dci_informativeness": float(np.mean(accuracy)),
    }


def _sizes(factor_sizes: Sizes) -> Ints:
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) == 0 or (sizes < 1).any():
        raise ConfigError(f"factor_sizes must be a non-empty list of class counts >= 1, got {list(factor_sizes)}")
    return sizes


def sample_factors(factor_sizes: Sizes, n: int, rng: SeedLike) -> Ints:
    """`n` rows of factor classes, each factor uniform over range(size) and independent: (n, K) ints."""
    sizes = _sizes(factor_sizes)
    return _generator(rng).integers(0, sizes, size=(n, len(sizes)), dtype=np.int64)


def _represent(represent: Represent, factors: Ints) -> Floats:
    """`represent` over `factors` (B, K) in chunks of _ROWS_PER_CALL rows, its output checked: (B, H)."""
    parts: list[Floats] = []
    for start in range(0, len(factors), _ROWS_PER_CALL):
        rows = factors[start : start + _ROWS_PER_CALL]
        part = np.asarray(represent(rows), dtype=np.float64)
        if part.ndim != 2 or len(part) != len(rows) or (parts and part.shape[1] != parts[0].shape[1]):
            raise ConfigError(
                f"represent must map ({len(rows)}, K) factors to ({len(rows)}, H) codes, got {part.shape}"
            )
        parts.append(part)
    return _codes(np.concatenate(parts), "represent's codes")


def _at_least(least: int, **counts: int) -> None:
    for name, value in counts.items():
        if value < least:
            raise ConfigError(f"{name} must be at least {least}, got {value}")


def _fixed_batches(sizes: Ints, keep: Ints, n: int, batch_size: int, rng: np.random.Generator) -> tuple[Ints, Ints]:
    """`n` fixed factor indices (uniform over `keep`) and `n` fresh batches of factors: (n,), (n, B, K)."""
    index = keep[rng.integers(len(keep), size=n)]
    batches = sample_factors(sizes, n * batch_size, rng).reshape(n, batch_size, len(sizes))
    return index, batches


def _beta_points(
    represent: Represent, sizes: Ints, keep: Ints, n: int, batch_size: int, rng: np.random.Generator
) -> tuple[Floats, Ints]:
    index, first = _fixed_batches(sizes, keep, n, batch_size, rng)
    second = sample_factors(sizes, n * batch_size, rng).reshape(first.shape)
    fixed = np.arange(len(sizes))[None, None, :] == index[:, None, None]
    second = np.where(fixed, first, second)  # pair b of point i shares factor index[i]
    codes = [_represent(represent, f.reshape(-1, len(sizes))).reshape(n, batch_size, -1) for f in (first, second)]
    return np.abs(codes[0] - codes[1]).mean(axis=1), index


def beta_vae_score(
    represent: Represent,
    factor_sizes: Sizes,
    rng: SeedLike,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
) -> float:
    """BetaVAE score (beta_vae.py `compute_beta_vae_sklearn`, "eval_accuracy"); chance is 1/K.

    Each point: a random factor k, and `batch_size` pairs of factor rows that share k's class (each pair its
    own) and draw the rest anew; its features are the mean |code(a) - code(b)| over the pairs, its label k.
    A LogisticRegression (scikit-learn defaults) fit on `num_train` points is scored on `num_eval` new ones.
    `represent` maps (B, K) factor classes to (B, H) codes. Single-class factors are never the fixed one.
    """
    sizes, generator = _sizes(factor_sizes), _generator(rng)
    _at_least(1, batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    keep = _kept(sizes >= 2)
    x, y = _beta_points(represent, sizes, keep, num_train, batch_size, generator)
    if len(np.unique(y)) < 2:
        raise ConfigError("the BetaVAE score needs two factors with two or more classes among its training points")
    model = LogisticRegression(random_state=_sklearn_seed(generator)).fit(x, y)
    x_eval, y_eval = _beta_points(represent, sizes, keep, num_eval, batch_size, generator)
    return float(model.score(x_eval, y_eval))


def _votes(
    represent: Represent,
    sizes: Ints,
    keep: Ints,
    n: int,
    batch_size: int,
    rng: np.random.Generator,
    variances: Floats,
    active: Ints,
) -> Ints:
    index, batches = _fixed_batches(sizes, keep, n, batch_size, rng)
    fixed = np.arange(len(sizes))[None, None, :] == index[:, None, None]
    batches = np.where(fixed, batches[:, :1, :], batches)  # factor index[i] takes the class of batch i's first row
    codes = _represent(represent, batches.reshape(-1, len(sizes))).reshape(n, batch_size, -1)
    local = np.var(codes[:, :, active], axis=1, ddof=1) / variances[active]
    votes = np.zeros((len(sizes), len(variances)), dtype=np.int64)
    np.add.at(votes, (index, active[np.argmin(local, axis=1)]), 1)
    return votes


def factor_vae_score(
    represent: Represent,
    factor_sizes: Sizes,
    rng: SeedLike,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_EVAL,
    num_variance_estimate: int = NUM_VARIANCE_ESTIMATE,
) -> float:
    """FactorVAE score (factor_vae.py `compute_factor_vae`, "eval_accuracy"); chance is 1/K.

    Global variances (ddof=1) of the codes of `num_variance_estimate` random factor rows; dimensions with a
    standard deviation under PRUNE_THRESHOLD (0.05) are pruned, and the score is 0.0 if none is left. Each vote:
    a random factor k held at one class over a batch of `batch_size` rows; the vote is (k, the active dimension
    with the least variance over the batch divided by its global variance). The classifier maps each dimension
    to the factor it got most training votes for; the score is the share of `num_eval` votes it gets right.
    """
    sizes, generator = _sizes(factor_sizes), _generator(rng)
    _at_least(1, num_train=num_train, num_eval=num_eval)
    _at_least(2, batch_size=batch_size, num_variance_estimate=num_variance_estimate)  # variances with ddof=1
    keep = _kept(sizes >= 2)
    variances = np.var(_represent(represent, sample_factors(sizes, num_variance_estimate, generator)), axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(variances) >= PRUNE_THRESHOLD)
    if len(active) == 0:  # factor_vae.py: no active dimension scores 0
        return 0.0
    train = _votes(represent, sizes, keep, num_train, batch_size, generator, variances, active)
    classifier = np.argmax(train, axis=0)
    votes = _votes(represent, sizes, keep, num_eval, batch_size, generator, variances, active)
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())
