"""What the training loop records: the loss terms of a split, and one row per epoch.

EpochRecord is what every epoch of a fit fills and what metrics.json stores;
evaluate() gives its test terms.
"""

from dataclasses import dataclass
from typing import Any

import torch

from vaecli.choices import BATCH_COUPLED
from vaecli.config import TrainConfig
from vaecli.core import latent
from vaecli.core.data import binarize
from vaecli.core.images import ImageRows, Images, as_images
from vaecli.core.loss import kl_divergence, objective_terms, reconstruction_nll_sum
from vaecli.core.model import VAE
from vaecli.engine.bound import importance_weighted_nll


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
    """One epoch of a fit, as metrics.json stores it: the training pass's running terms, the test terms after it."""

    epoch: int  # 1-based
    lam: float
    train: Terms  # running mean over the epoch's batches, as the model changed
    test: Terms  # after the epoch, on the whole test split
    seconds: float  # the training pass alone, not the evaluation
    # the objective training minimized (core/loss.objective_terms): the epoch's running mean, and on the
    # test split after the epoch at the last step's KL weight; None in records from before it was kept
    train_objective: float | None = None
    test_objective: float | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": self.epoch, "lam": self.lam}
        for split, terms, objective in (
            ("train", self.train, self.train_objective),
            ("test", self.test, self.test_objective),
        ):
            row[f"{split}_recon"] = terms.recon
            row[f"{split}_kl"] = terms.kl
            row[f"{split}_lam_kl"] = self.lam * terms.kl
            row[f"{split}_total"] = terms.total(self.lam)
            row[f"{split}_neg_elbo"] = terms.neg_elbo
            if objective is not None:
                row[f"{split}_objective"] = objective
        row["seconds"] = self.seconds
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "EpochRecord":
        """A record from its JSON; a value that is not a number (a string, true) raises TypeError."""

        def number(key: str) -> float:
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{key!r} must be a number, got {value!r}")
            return float(value)

        def optional(key: str) -> float | None:
            return number(key) if row.get(key) is not None else None

        epoch = number("epoch")
        if epoch != int(epoch):
            raise TypeError(f"'epoch' must be a whole number, got {epoch!r}")
        return cls(
            epoch=int(epoch),
            lam=number("lam"),
            train=Terms(number("train_recon"), number("train_kl")),
            test=Terms(number("test_recon"), number("test_kl")),
            seconds=number("seconds"),
            train_objective=optional("train_objective"),
            test_objective=optional("test_objective"),
        )


@torch.inference_mode()
def evaluate(
    model: VAE,
    images: ImageRows,
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


def scored_test_images(images: ImageRows, config: TrainConfig) -> Images:
    """The test images as scored: binarized once, with a fixed draw, when the run binarizes (kept compact)."""
    images = as_images(images)
    if not config.binarize:
        return images
    generator = torch.Generator(device=images.device).manual_seed(config.seed + 1)
    return Images.binary(binarize(images.float(), generator))


@torch.inference_mode()
def test_objective(
    model: VAE,
    images: ImageRows,
    terms: Terms,
    config: TrainConfig,
    lam: float,
    capacity: float,
    generator: torch.Generator | None = None,
    data_size: int | None = None,
) -> float:
    """The objective of `config` on `images` (N, D), in nats per image, at KL weight `lam` and `capacity`.

    `terms`: evaluate()'s on the same images. The ELBO and KL warm-up need nothing more;
    free bits hold each dimension's mean KL over the whole split up; the importance-weighted
    bound draws its k samples of every image from `generator`; beta-TCVAE's estimator takes
    batches of the training's size, drawn from `data_size` images, and one z per image.
    """
    if config.objective == "iwae":
        return importance_weighted_nll(model, images, config.k, generator)
    if config.objective in BATCH_COUPLED:  # in batches of the training's size
        total = 0.0
        for start in range(0, len(images), config.batch_size):
            x = images[start : start + config.batch_size]
            out = model(x, generator)
            batch = objective_terms(config, out, x, torch.empty(0), lam, capacity, data_size or len(images))
            total += float(batch.loss) * len(x)
        return total / len(images)
    if config.free_bits:
        held = float(latent.kl_per_dim(*latent.encode_means(model, images)).clamp_min(config.free_bits).sum())
    elif config.capacity:
        held = abs(terms.kl - capacity)
    else:
        held = terms.kl
    return terms.recon + lam * held
