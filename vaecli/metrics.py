"""How good a VAE is: loss terms per epoch, and the test-set metrics that compare runs.

Beyond recon and KL: an importance-weighted bound on the negative log-likelihood
(Burda, Grosse & Salakhutdinov 2016, eq. 8), active units (the same paper,
section 5.2: a latent dimension is active when Var_x(E_q[z_d | x]) > 0.01) and
the average KL of each latent dimension.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from vaecli import latent
from vaecli.config import TrainConfig
from vaecli.data import Dataset, binarize
from vaecli.loss import kl_divergence, reconstruction_nll, reconstruction_nll_sum
from vaecli.model import VAE

ACTIVE_THRESHOLD = 0.01  # Burda et al.'s cut-off on Var_x(E_q[z_d | x])


@dataclass(frozen=True)
class Terms:
    """Mean recon and KL in nats per image over a split."""

    recon: float
    kl: float

    @property
    def neg_elbo(self) -> float:
        return self.recon + self.kl

    def total(self, lam: float) -> float:
        return self.recon + lam * self.kl


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    lam: float
    train: Terms  # running mean over the epoch's batches, as the model changed
    test: Terms  # after the epoch, on the whole test split
    seconds: float  # the training pass alone, not the evaluation

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": self.epoch, "lam": self.lam}
        for split, terms in (("train", self.train), ("test", self.test)):
            row[f"{split}_recon"] = terms.recon
            row[f"{split}_kl"] = terms.kl
            row[f"{split}_lam_kl"] = self.lam * terms.kl
            row[f"{split}_total"] = terms.total(self.lam)
            row[f"{split}_neg_elbo"] = terms.neg_elbo
        row["seconds"] = self.seconds
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "EpochRecord":
        return cls(
            epoch=int(row["epoch"]),
            lam=float(row["lam"]),
            train=Terms(float(row["train_recon"]), float(row["train_kl"])),
            test=Terms(float(row["test_recon"]), float(row["test_kl"])),
            seconds=float(row["seconds"]),
        )


@torch.inference_mode()
def evaluate(
    model: VAE,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 2000,
) -> Terms:
    """Mean recon and KL over `images` (N, D), one z sample per image.

    Large batches without autograd. 2000 rather than all 10000 test images at once:
    (2000, 784) tensors fit the CPU's caches, and the evaluation after every epoch
    took 0.14 s instead of 0.17 s on a 2-core CPU.
    """
    was_training = model.training
    model.eval()
    recon = torch.zeros((), dtype=torch.float64, device=images.device)
    kl = torch.zeros((), dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        out = model(x, generator)
        recon += reconstruction_nll_sum(out.logits, x, model.config.recon)
        kl += kl_divergence(out.mu, out.logvar).sum()
    model.train(was_training)
    n = len(images)
    return Terms(recon.item() / n, kl.item() / n)


def scored_test_images(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The test images as scored: binarized once, with a fixed draw, when the run binarizes."""
    if not config.binarize:
        return images
    generator = torch.Generator(device=images.device).manual_seed(config.seed + 1)
    return binarize(images, generator)


def kl_per_dimension(model: VAE, images: torch.Tensor) -> torch.Tensor:
    """Average KL(q(z_d|x) || N(0, 1)) over `images` for each latent dimension d: (H,)."""
    return latent.kl_per_dim(*latent.encode_means(model, images)).float()


def mean_codes(model: VAE, images: torch.Tensor) -> torch.Tensor:
    """E_q[z | x] for each image: (N, H)."""
    return latent.encode_means(model, images)[0]


def active_units(model: VAE, images: torch.Tensor) -> int:
    """How many latent dimensions have Var_x(E_q[z_d | x]) above 0.01."""
    return int((mean_codes(model, images).var(dim=0) > ACTIVE_THRESHOLD).sum())


@torch.inference_mode()
def importance_weighted_nll(
    model: VAE,
    images: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
    chunk: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """-E_x[log (1/k) sum_i p(x, z_i) / q(z_i | x)], z_i ~ q(z | x): an upper bound on -log p(x).

    k = 1 is the negative ELBO (in expectation); the bound tightens as k grows.
    For the gaussian likelihood it is up to the dropped constant of recon.
    `progress(done, total)` is called after each batch of images.
    """
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]  # (B, D)
        mu, logvar = model.encode(x)  # (B, H)
        std = torch.exp(0.5 * logvar)
        log_weights = []
        for done in range(0, k, chunk):
            n = min(chunk, k - done)
            eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # (n, B, H)
            # one sample of every image at a time: (B, D) tensors stay in the CPU's caches, where all n at once
            # (n * B, D), 78 MB, took 1.5x as long, over half of it in the kernel mapping fresh pages
            log_px_z = torch.stack([-reconstruction_nll(model.decode(z_i), x, model.config.recon) for z_i in z])
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + math.log(2 * math.pi) + logvar).sum(-1)
            log_weights.append(log_px_z + log_pz - log_qz)  # (n, B)
        log_px = torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)  # (B,)
        total += -log_px.double().sum().item()
        if progress is not None:
            progress(start + len(x), len(images))
    return total / len(images)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_metrics(
    model: VAE,
    images: torch.Tensor,
    iw_samples: int = 100,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RunMetrics:
    """Every test metric of `model` on `images` (N, D), with seeded sampling."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    terms = evaluate(model, images, generator)
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
    """run_metrics of a trained model on its data set's test split, scored as in training."""
    images = scored_test_images(data.test.images.to(device), config)
    return run_metrics(model.to(device), images, iw_samples, seed, progress)
