"""The loss, with its terms apart: total = recon + lam * KL, in nats per image."""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vaecli.core.model import VAEOutput


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per image, summed over latents: (B,).

    Closed form from Kingma & Welling 2014, Appendix B:
    -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def _bernoulli_nll_values(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per pixel: softplus(l) - l * x = max(l, 0) - log(sigmoid(|l|)) - l * x.

    Written with sigmoid and log because PyTorch's AVX-512 CPU kernel for log1p, which
    binary_cross_entropy_with_logits (log_sigmoid) and softplus use, is about 10x
    slower than its log (torch 2.x; the AVX2 one is not): that kernel alone was
    10-25 % of a training step. sigmoid(|l|) in [1/2, 1) loses under 6e-8 nats a pixel.
    """
    out = logits.abs().sigmoid_().log_().neg_()
    return out.add_(logits.clamp_min(0)).addcmul_(logits, x, value=-1)


class _BernoulliNLL(torch.autograd.Function):
    """_bernoulli_nll_values with the textbook gradient: sigmoid(l) - x with respect to l."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        return _bernoulli_nll_values(logits, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, x = ctx.saved_tensors
        d_logits = torch.sigmoid(logits).sub_(x).mul_(grad) if ctx.needs_input_grad[0] else None
        d_x = -logits * grad if ctx.needs_input_grad[1] else None
        return d_logits, d_x


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x | sigmoid(logits)) per pixel, the same values as F.binary_cross_entropy_with_logits."""
    return _BernoulliNLL.apply(logits, x)


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """-log p(x|z) per image, summed over pixels: (B,).

    bernoulli: binary cross-entropy from logits (stable, no sigmoid round trip).
    gaussian: summed squared error of the pixel means, i.e. the NLL of a Gaussian
    with variance 1/2 without its constant D/2 * log(pi).
    """
    if kind == "bernoulli":
        return bernoulli_nll(logits, x).sum(dim=1)
    if kind == "gaussian":
        return (torch.sigmoid(logits) - x).pow(2).sum(dim=1)
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def reconstruction_nll_sum(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """reconstruction_nll summed over the batch too: a scalar."""
    if kind == "bernoulli":
        return bernoulli_nll(logits, x).sum()
    if kind == "gaussian":
        return F.mse_loss(torch.sigmoid(logits), x, reduction="sum")
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def reconstruction_nll_grad(logits: torch.Tensor, x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """`scale` times the gradient of reconstruction_nll_sum with respect to the logits: (B, D), a new tensor.

    The products in autograd's order, so that the values match its to the last bit.
    """
    if kind == "bernoulli":
        return torch.sigmoid(logits).sub_(x).mul_(scale)
    if kind == "gaussian":
        mean = torch.sigmoid(logits)
        # d/dl (s - x)^2 = 2 (s - x) s (1 - s)
        return (mean - x).mul_(2 * scale).mul_(1 - mean).mul_(mean)
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def kl_divergence_grad(mu: torch.Tensor, logvar: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`scale` times the gradients of kl_divergence's sum over the batch, mu and (exp(logvar) - 1) / 2: new tensors.

    In autograd's order, exp(logvar) * (scale / 2) - scale / 2, not (exp(logvar) - 1) * scale / 2:
    the two differ in the last bit whenever scale is not a power of two (lam = 5, say).
    """
    half = 0.5 * scale
    return mu * scale, logvar.exp().mul_(half).sub_(half)


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
