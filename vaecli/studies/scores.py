"""The test-set metrics that compare runs, and their cache in a run folder (scores.json).

Beyond recon and KL: an importance-weighted bound on the negative log-likelihood
(Burda, Grosse & Salakhutdinov 2016, eq. 8), active units (the same paper,
section 5.2: a latent dimension is active when Var_x(E_q[z_d | x]) > 0.01) and
the average KL of each latent dimension.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaecli import atomic
from vaecli.config import TrainConfig
from vaecli.core import latent
from vaecli.core.data import Dataset
from vaecli.core.images import ImageRows, as_images
from vaecli.core.model import VAE
from vaecli.engine.bound import importance_weighted_nll
from vaecli.engine.records import evaluate, scored_test_images
from vaecli.engine.steps import eval_generator
from vaecli.store.checkpoint import METRICS_FILE, SCORES_FILE, Run

ACTIVE_THRESHOLD = 0.01  # Burda et al.'s cut-off on Var_x(E_q[z_d | x])


def kl_per_dimension(model: VAE, images: ImageRows) -> torch.Tensor:
    """Average KL(q(z_d|x) || N(0, 1)) over `images` for each latent dimension d: (H,)."""
    return latent.kl_per_dim(*latent.encode_means(model, images)).float()


def mean_codes(model: VAE, images: ImageRows) -> torch.Tensor:
    """E_q[z | x] for each image: (N, H)."""
    return latent.encode_means(model, images)[0]


def active_units(model: VAE, images: ImageRows) -> int:
    """How many latent dimensions have Var_x(E_q[z_d | x]) above 0.01."""
    return int((mean_codes(model, images).var(dim=0) > ACTIVE_THRESHOLD).sum())


@dataclass(frozen=True)
class RunMetrics:
    """A run's test-set metrics, as `vaecli eval` and ablation tables report them (nats per image)."""

    recon: float
    kl: float
    neg_elbo: float
    iw_nll: float  # importance-weighted bound on -log p(x) with iw_samples samples
    iw_samples: int
    active_units: int
    latent_dim: int
    kl_per_dim: list[float]
    # the disentanglement metrics (studies/factor_scores.NAMES), on a data set with factors; else None
    disentanglement: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_metrics(
    model: VAE,
    images: ImageRows,
    iw_samples: int = 100,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    elbo_noise: torch.Generator | None = None,
) -> RunMetrics:
    """Every test metric of `model` on `images` (N, D), with seeded sampling.

    `elbo_noise`: the generator of the z samples behind recon, KL and -ELBO (default: the one seeded with
    `seed`, which the bound's samples then continue); score_run passes the training's own evaluation noise.
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    terms = evaluate(model, images, elbo_noise or generator)
    return RunMetrics(
        recon=terms.recon,
        kl=terms.kl,
        neg_elbo=terms.neg_elbo,
        iw_nll=importance_weighted_nll(model, images, iw_samples, generator, progress=progress),
        iw_samples=iw_samples,
        active_units=active_units(model, images),
        latent_dim=model.config.latent_dim,
        kl_per_dim=kl_per_dimension(model, images).tolist(),
    )


def score_run(
    model: VAE,
    config: TrainConfig,
    data: Dataset,
    iw_samples: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RunMetrics:
    """run_metrics of a trained model on its data set's test split, scored as in training: its recon, KL and
    -ELBO with the noise of the training's own evaluation, so they are the run's final test numbers."""
    images = scored_test_images(data.test.images.to(device), config)
    noise = eval_generator(config, images.device)
    return run_metrics(model.to(device), images, iw_samples, seed, progress, elbo_noise=noise)


def stored_scores(
    run: Run,
    data: Dataset,
    iw_samples: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RunMetrics:
    """score_run of a stored run, kept in its folder's scores.json so that asking again costs nothing.

    The key names the sample count, the seed and a hash of the test images;
    save_run deletes the file, so a retrained run is scored afresh. A lone
    model file (no metrics.json beside it) is scored but nothing is written.
    """
    # "elbo-as-trained": recon, KL and -ELBO with the training's evaluation noise (scores of earlier versions,
    # under keys without it, used the bound's seed and are scored again)
    key = f"iw{iw_samples}-seed{seed}-test-{_digest(data.test.images)}-elbo-as-trained"

    def compute() -> dict[str, Any]:
        return score_run(run.model, run.config, data, iw_samples, seed, device, progress).to_dict()

    try:
        return RunMetrics(**cached(run, key, compute))
    except TypeError:  # written by another version: score again
        return RunMetrics(**cached(run, key, compute, fresh=True))


def cached(run: Run, key: str, compute: Callable[[], dict[str, Any]], fresh: bool = False) -> dict[str, Any]:
    """The scores under `key` in the run folder's scores.json, computed (and kept) when missing or `fresh`.

    A lone model file (no metrics.json beside it) and a read-only store keep nothing.
    """
    path = run.path / SCORES_FILE
    stored = _read_scores(path)
    if not fresh and isinstance(stored.get(key), dict):
        return stored[key]
    value = compute()
    if (run.path / METRICS_FILE).is_file() and atomic.writable(run.path):
        atomic.write_json(path, {**_read_scores(path), key: value})
    return value


def _digest(images: ImageRows) -> str:
    return as_images(images).digest()[:16]


def _read_scores(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a cache: missing or damaged means score again
    return data if isinstance(data, dict) else {}
