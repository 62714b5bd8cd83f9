"""A run's disentanglement scores: its mean codes of a data set with factors, fed to studies/disentanglement.py.

    from vaecli import load_run
    from vaecli.core.data import load_for
    from vaecli.studies.factor_scores import disentanglement_scores
    run = load_run("runs/...")
    print(disentanglement_scores(run.model, load_for(run.config)))   # {"beta_vae": ..., "mig": ..., ...}

As disentanglement_lib does, the points are drawn from the whole data set (every
factor combination, train and test alike: BetaVAE's and FactorVAE's batches need
combinations with one factor held fixed, which a split does not hold), uniformly
over the factor classes, seeded; the representation is the encoder's mean.
`POINTS` are disentanglement_lib's defaults; `scale` shrinks them all (tests).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vaecli.choices import DISENTANGLEMENT_METRICS
from vaecli.core.data import Dataset
from vaecli.core.dataset import Factors, Split
from vaecli.core.latent import encode_means
from vaecli.core.model import VAE
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import Run
from vaecli.studies.scores import cached

# disentanglement_lib's defaults (config/unsupervised_study_v1/metric_configs): points per metric
POINTS = {
    "beta_vae": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000},
    "factor_vae": {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    "mig": {"num_train": 10_000},
    "sap": {"num_train": 10_000, "num_test": 5_000},
    "dci": {"num_train": 10_000, "num_test": 5_000},
}
NAMES = DISENTANGLEMENT_METRICS  # the seven numbers, as `vaecli eval --json` keys them
TITLES = {
    "beta_vae": "BetaVAE score",
    "factor_vae": "FactorVAE score",
    "mig": "MIG",
    "sap": "SAP",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness": "DCI informativeness",
}
SHORT_TITLES = {
    "beta_vae": "BetaVAE",
    "factor_vae": "FactorVAE",
    "mig": "MIG",
    "sap": "SAP",
    "dci_disentanglement": "DCI dis.",
    "dci_completeness": "DCI compl.",
    "dci_informativeness": "DCI inf.",
}
ENCODE_BATCH = 2048


@dataclass(frozen=True)
class FactorCodes:
    """A model's mean codes of a data set's factor combinations, by factor classes."""

    model: VAE
    factors: Factors

    @torch.no_grad()
    def __call__(self, classes: np.ndarray) -> np.ndarray:
        """Factor classes (B, K) int -> mean codes (B, H) float64."""
        model = self.model.eval()
        param = next(model.parameters())
        table = torch.from_numpy(np.asarray(classes, dtype=np.int64))
        codes = []
        for start in range(0, len(table), ENCODE_BATCH):
            x = self.factors.images_of(table[start : start + ENCODE_BATCH]).to(param.device, param.dtype)
            codes.append(model.encode(x)[0].double().cpu())
        return torch.cat(codes).numpy() if codes else np.zeros((0, model.config.latent_dim))


def _points(scale: float) -> dict[str, dict[str, int]]:
    return {
        name: {k: v if k == "batch_size" else max(8, round(v * scale)) for k, v in p.items()}
        for name, p in POINTS.items()
    }


def disentanglement_scores(
    model: VAE,
    data: Dataset,
    seed: int = 0,
    scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """The five metrics (seven numbers, keys `NAMES`) of `model`'s mean codes on `data`'s factors.

    `progress(name)` is called before each metric.
    """
    from vaecli.studies import disentanglement as metrics  # scikit-learn: only where a metric is asked for

    if data.factors is None:
        raise ConfigError(f"{data.name} has no factor labels, so its disentanglement cannot be measured")
    if model.config.image_shape != data.image_shape:
        raise ConfigError(f"the model expects {model.config.image_shape} images but {data.name} has {data.image_shape}")
    represent, sizes, points = FactorCodes(model, data.factors), data.factors.sizes, _points(scale)
    rng = np.random.default_rng(seed)
    say = progress or (lambda name: None)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        classes = metrics.sample_factors(sizes, n, rng)
        return represent(classes), classes

    scores: dict[str, float] = {}
    say("beta_vae")
    scores["beta_vae"] = metrics.beta_vae_score(represent, sizes, rng, **points["beta_vae"])
    say("factor_vae")
    scores["factor_vae"] = metrics.factor_vae_score(represent, sizes, rng, **points["factor_vae"])
    say("mig")
    scores["mig"] = metrics.mig(*sample(points["mig"]["num_train"]))
    say("sap")
    scores["sap"] = metrics.sap(*sample(points["sap"]["num_train"]), *sample(points["sap"]["num_test"]))
    say("dci")
    dci = metrics.dci(*sample(points["dci"]["num_train"]), *sample(points["dci"]["num_test"]), seed=seed)
    scores.update(
        {name: float(dci[name]) for name in ("dci_disentanglement", "dci_completeness", "dci_informativeness")}
    )
    return {name: float(scores[name]) for name in NAMES}


def stored_disentanglement(
    run: Run, data: Dataset, seed: int = 0, scale: float = 1.0, progress: Callable[[str], None] | None = None
) -> dict[str, float]:
    """disentanglement_scores of a stored run, kept in its scores.json beside its test metrics.

    The key names the seed, the points' scale and where the images came from (the render
    version's cache or the original file), so other images are scored afresh.
    """
    where = f"{data.origin}-{data.source.name}".replace(" ", "-")
    key = f"disentanglement-seed{seed}" + (f"-scale{scale:g}" if scale != 1 else "") + f"-{where}"

    def compute() -> dict[str, float]:
        return disentanglement_scores(run.model, data, seed, scale, progress)

    found = cached(run, key, compute)
    if set(found) != set(NAMES):  # written by another version
        found = cached(run, key, compute, fresh=True)
    return found


@dataclass(frozen=True)
class MutualInformation:
    """I(z_j; factor_k) of a model's mean codes, in nats, with each factor's entropy."""

    matrix: np.ndarray  # (H, K) nats
    entropies: np.ndarray  # (K,) nats
    factor_names: tuple[str, ...]
    points: int
    bins: int

    @property
    def normalised(self) -> np.ndarray:
        """Each factor's column divided by its entropy: 1 where a latent alone determines the factor."""
        return self.matrix / np.maximum(self.entropies, 1e-12)[None, :]

    def captures(self) -> list[tuple[str, float]]:
        """Per latent, the factor it holds most about and that share of the factor's entropy."""
        share = self.normalised
        return [(self.factor_names[int(row.argmax())], float(row.max())) for row in share]


def latent_information(model: VAE, split: Split, names: tuple[str, ...], bins: int = 20) -> MutualInformation:
    """The mutual information between `model`'s mean codes of a split's images and their factors."""
    from vaecli.studies import disentanglement as metrics  # scikit-learn: only where asked for

    if split.factors is None:
        raise ConfigError("these images have no factor labels, so what the latents capture cannot be measured")
    codes = encode_means(model, split.images)[0].double().numpy()
    factors = split.factors.cpu().numpy()
    matrix = metrics.mutual_information(codes, factors, num_bins=bins)
    return MutualInformation(matrix, metrics.factor_entropies(factors), names, len(codes), bins)
