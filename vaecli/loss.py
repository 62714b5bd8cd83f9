"""The loss, with its terms apart: total = recon + lam * KL, in nats per image."""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vaecli.model import VAEOutput


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per image, summed over latents: (B,).

    Closed form from Kingma & Welling 2014, Appendix B:
    -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """-log p(x|z) per image, summed over pixels: (B,).

    bernoulli: binary cross-entropy from logits (stable, no sigmoid round trip).
    gaussian: summed squared error of the pixel means, i.e. the NLL of a Gaussian
    with variance 1/2 without its constant D/2 * log(pi).
    """
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    if kind == "gaussian":
        return (torch.sigmoid(logits) - x).pow(2).sum(dim=1)
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def reconstruction_nll_sum(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """reconstruction_nll summed over the batch too: a scalar, in one fused pass.

    Reducing inside the loss kernel is about twice as fast, forward and backward,
    as per-image sums (benchmarks/bench_train.py spends less time on the loss).
    """
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    if kind == "gaussian":
        return F.mse_loss(torch.sigmoid(logits), x, reduction="sum")
    raise ValueError(f"unknown reconstruction kind {kind!r}")


class LossTerms(NamedTuple):
    recon: torch.Tensor  # scalar: mean over the batch, so lam means the same at any batch size
    kl: torch.Tensor  # scalar, mean over the batch
    lam: float

    @property
    def total(self) -> torch.Tensor:
        return self.recon + self.lam * self.kl

    @property
    def neg_elbo(self) -> torch.Tensor:
        """recon + KL: the lam-free bound, comparable across runs with different lam."""
        return self.recon + self.kl


def vae_loss(out: VAEOutput, x: torch.Tensor, lam: float, kind: str) -> LossTerms:
    recon = reconstruction_nll_sum(out.logits, x, kind) / len(x)
    kl = kl_divergence(out.mu, out.logvar).mean()
    return LossTerms(recon, kl, lam)
