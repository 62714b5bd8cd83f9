"""The loss, with its terms apart: total = recon + lam * KL, in nats per image; and the objectives beyond it.

Objectives (objective_terms): the ELBO with a KL weight lam (the homework's), with
free bits or a capacity, the importance-weighted bound of Burda et al. 2016,
beta-TCVAE (Chen et al. 2018), which weights the KL's total-correlation part, and
DIP-VAE-I and -II (Kumar et al. 2018), which penalise the codes' covariance.
Each returns what is minimized beside the terms that compare across runs.
"""

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from vaecli.core.model import VAEOutput

if TYPE_CHECKING:
    from vaecli.config import TrainConfig

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per image, summed over latents (the last axis): (B,).

    Closed form from Kingma & Welling 2014, Appendix B:
    -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


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
    """-log p(x|z) per image, summed over pixels: (B,) (or (k, B) for (k, B, D) logits of k samples).

    bernoulli: binary cross-entropy from logits (stable, no sigmoid round trip).
    gaussian: summed squared error of the pixel means, i.e. the NLL of a Gaussian
    with variance 1/2 without its constant D/2 * log(pi).
    """
    if kind == "bernoulli":
        return bernoulli_nll(logits, x).sum(dim=-1)
    if kind == "gaussian":
        return (torch.sigmoid(logits) - x).pow(2).sum(dim=-1)
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def reconstruction_nll_sum(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """reconstruction_nll summed over the batch too: a scalar."""
    if kind == "bernoulli":
        return bernoulli_nll(logits, x).sum()
    if kind == "gaussian":
        return F.mse_loss(torch.sigmoid(logits), x, reduction="sum")
    raise ValueError(f"unknown reconstruction kind {kind!r}")


def reconstruction_nll_grad(
    logits: torch.Tensor, x: torch.Tensor, kind: str, scale: float | torch.Tensor
) -> torch.Tensor:
    """`scale` times the gradient of reconstruction_nll_sum with respect to the logits: like logits, a new tensor.

    A tensor `scale` weighs each image apart ((k, B, 1) for (k, B, D) logits). The products in
    autograd's order, so that the values match its to the last bit.
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
    """The homework's loss on a batch: recon and KL, each a mean over its images, and lam; `.total` is minimized."""
    recon = reconstruction_nll_sum(out.logits, x, kind) / len(x)
    kl = kl_divergence(out.mu, out.logvar).mean()
    return LossTerms(recon, kl, lam)


# --------------------------------------------------------------------------- objectives beyond the ELBO


def kl_divergence_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z_d | x) || N(0, 1)) of each image and latent dimension: (..., H), kl_divergence before its sum."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_posterior(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z | x) at z = mu + sigma * eps, summed over the last axis: -1/2 (eps^2 + log 2 pi + log sigma^2)."""
    return -0.5 * (eps.pow(2) + LOG_2PI + logvar).sum(-1)


class ObjectiveTerms(NamedTuple):
    loss: torch.Tensor  # scalar: what training minimizes
    recon: torch.Tensor  # scalar, mean over the batch (and the k samples)
    kl: torch.Tensor  # scalar, closed form, mean over the batch


def elbo_objective(
    out: VAEOutput, x: torch.Tensor, lam: float, kind: str, free_bits: float = 0.0, capacity: float | None = None
) -> ObjectiveTerms:
    """recon + lam * KL, and its two variants that keep the KL from collapsing to 0.

    free_bits F (Kingma et al. 2016, "Improved variational inference with inverse
    autoregressive flow", eq. 15): each latent dimension's KL, averaged over the
    batch, counts as at least F nats, so below F it is not pushed further to the prior.
    capacity C (Burgess et al. 2018, "Understanding disentangling in beta-VAE", eq. 8):
    recon + lam * |KL - C|, so lam holds the code's information near C nats.
    Neither given: vae_loss's own arithmetic, to the last bit.
    """
    if not free_bits and capacity is None:
        terms = vae_loss(out, x, lam, kind)
        return ObjectiveTerms(terms.total, terms.recon, terms.kl)
    recon = reconstruction_nll_sum(out.logits, x, kind) / len(x)
    kl = kl_divergence(out.mu, out.logvar).mean()
    if capacity is not None:
        held = (kl - capacity).abs()
    else:
        held = (
            kl_divergence_per_dim(out.mu, out.logvar).mean(0).clamp_min(free_bits).sum()
        )  # (H,) batch means, then summed
    return ObjectiveTerms(recon + lam * held, recon, kl)


def iwae_objective(out: VAEOutput, x: torch.Tensor, eps: torch.Tensor, kind: str) -> ObjectiveTerms:
    """The negative importance-weighted bound with k samples (Burda, Grosse & Salakhutdinov 2016, eq. 8).

    out: the decoding of z = mu + sigma * eps for eps (k, B, H): logits (k, B, D), z (k, B, H),
    mu and logvar (B, H). -log (1/k) sum_i p(x, z_i) / q(z_i | x), averaged over the batch;
    k = 1 is a one-sample estimate of the negative ELBO.
    """
    return _iwae(out, x, eps, kind)[0]


def _iwae(
    out: VAEOutput, x: torch.Tensor, eps: torch.Tensor, kind: str
) -> tuple[ObjectiveTerms, torch.Tensor, torch.Tensor]:
    """iwae_objective's terms, and the log weights (k, B) and their logsumexp (B,) that its gradient needs."""
    k = eps.shape[0]
    log_px_z = -reconstruction_nll(out.logits, x, kind)  # (k, B)
    log_w = log_px_z + log_prior(out.z) - log_posterior(eps, out.logvar)  # (k, B)
    lse = torch.logsumexp(log_w, dim=0)  # (B,)
    bound = lse - math.log(k)
    terms = ObjectiveTerms(-bound.mean(), -log_px_z.mean(), kl_divergence(out.mu, out.logvar).mean())
    return terms, log_w, lse


class KlParts(NamedTuple):
    """The KL term split as Chen et al. 2018 (eq. 2) split it, each a mean over the batch in nats."""

    mi: torch.Tensor  # index-code mutual information I(x; z)
    tc: torch.Tensor  # total correlation KL(q(z) || prod_j q(z_j))
    dim_kl: torch.Tensor  # dimension-wise KL, sum_j KL(q(z_j) || p(z_j))


def stratified_log_weights(batch: int, data_size: int, device: torch.device | None = None) -> torch.Tensor:
    """log w_ij (B, B) of minibatch-stratified sampling (Chen et al. 2018, appendix C.2).

    q(z_i) = (1/N) sum_n q(z_i | x_n) is estimated as sum_j w_ij q(z_i | x_j): weight 1/N for the image z_i
    was drawn from, (N - M) / (N M) for one other image of the batch, 1/M for the rest (M = B - 1), so
    each row sums to 1, as the authors' code arranges the strata.
    """
    if batch == 1:
        return torch.zeros(1, 1, device=device)
    m, n = batch - 1, data_size
    weights = torch.full((batch, batch), 1.0 / m, dtype=torch.float64)
    index = torch.arange(batch)
    weights[index, index] = 1.0 / n
    weights[index, (index + 1) % batch] = (n - m) / (n * m)
    return weights.log().to(device=device, dtype=torch.float32)


def kl_parts(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, data_size: int) -> KlParts:
    """The three parts of E_x KL(q(z|x) || p(z)) at samples z (B, H) of q(z | x) for a batch drawn from N images.

    The aggregate posterior q(z) and its marginals q(z_j) are estimated by minibatch-stratified
    sampling (stratified_log_weights), the second of Chen et al.'s two estimators: unlike the first
    (minibatch-weighted sampling, which disentanglement_lib uses), its values are near the parts'
    own (two images with one posterior share no information: MI near 0, where the weighted estimator
    says log N), and vaecli reports the parts and derive checks them. Both give the same
    gradients up to their bias; the parts add up to the sampled KL, log q(z|x) - log p(z), exactly.
    """
    batch = z.shape[0]
    # log q(z_i | x_j) per dimension: (B, B, H), i indexes the sample, j the image whose posterior it is under
    log_q = -0.5 * (LOG_2PI + logvar[None] + (z[:, None] - mu[None]).pow(2) / logvar[None].exp())
    log_w = stratified_log_weights(batch, data_size, z.device).to(z.dtype)  # (B, B)
    log_qz = torch.logsumexp(log_q.sum(-1) + log_w, dim=1)  # (B,)
    log_marginals = torch.logsumexp(log_q + log_w[..., None], dim=1).sum(-1)  # (B,): log prod_j q(z_ij)
    log_qz_x = log_q.diagonal(dim1=0, dim2=1).sum(0)  # (B,): log q(z_i | x_i)
    log_pz = log_prior(z)
    return KlParts(
        (log_qz_x - log_qz).mean(),
        (log_qz - log_marginals).mean(),
        (log_marginals - log_pz).mean(),
    )


def betatc_objective(
    out: VAEOutput, x: torch.Tensor, lam: float, tc_weight: float, kind: str, data_size: int
) -> ObjectiveTerms:
    """beta-TCVAE (Chen et al. 2018, eq. 4): recon + lam * (MI + dimension-wise KL) + tc_weight * TC.

    At lam 1 it is the paper's alpha = gamma = 1, beta = tc_weight; at tc_weight = lam, the ELBO with
    a KL weight lam, its KL sampled rather than in closed form. `kl` stays the closed form, so that
    -ELBO compares across objectives.
    """
    recon = reconstruction_nll_sum(out.logits, x, kind) / len(x)
    parts = kl_parts(out.z, out.mu, out.logvar, data_size)
    loss = recon + lam * (parts.mi + parts.dim_kl) + tc_weight * parts.tc
    return ObjectiveTerms(loss, recon, kl_divergence(out.mu, out.logvar).mean())


def dip_penalty(mu: torch.Tensor, logvar: torch.Tensor, second: bool, offdiag: float, diag: float) -> torch.Tensor:
    """DIP-VAE's penalty (Kumar et al. 2018, eqs. 6 and 9) on the batch's covariance of codes.

    DIP-VAE-I: Cov[mu(x)]; DIP-VAE-II: Cov_q(z) = Cov[mu(x)] + E[diag sigma^2(x)]. The penalty is
    offdiag * sum_{i != j} C_ij^2 + diag * sum_i (C_ii - 1)^2: the aggregate posterior pushed towards
    uncorrelated, unit-variance latents (the covariance as disentanglement_lib computes it, over the batch).
    """
    centred = mu - mu.mean(0, keepdim=True)
    cov = centred.T @ centred / len(mu)  # (H, H)
    if second:
        cov = cov + torch.diag(logvar.exp().mean(0))
    on = torch.diagonal(cov)
    off = cov - torch.diag(on)
    return offdiag * off.pow(2).sum() + diag * (on - 1).pow(2).sum()


def dip_objective(
    out: VAEOutput, x: torch.Tensor, lam: float, kind: str, second: bool, offdiag: float, diag: float
) -> ObjectiveTerms:
    """DIP-VAE-I or -II: recon + lam * KL + dip_penalty."""
    terms = vae_loss(out, x, lam, kind)
    penalty = dip_penalty(out.mu, out.logvar, second, offdiag, diag)
    return ObjectiveTerms(terms.total + penalty, terms.recon, terms.kl)


def objective_terms(
    config: "TrainConfig",
    out: VAEOutput,
    x: torch.Tensor,
    eps: torch.Tensor,
    lam: float,
    capacity: float,
    data_size: int | None = None,
) -> ObjectiveTerms:
    """The objective `config` names, at the KL weight `lam` and capacity `capacity` of this step.

    `data_size`: the images the batches are drawn from, which beta-TCVAE's estimator needs.
    """
    if config.objective == "iwae":
        return iwae_objective(out, x, eps, config.model.recon)
    if config.objective == "betatc":
        if data_size is None:
            raise ValueError("beta-TCVAE's objective needs `data_size`, the images the batches are drawn from")
        return betatc_objective(out, x, lam, config.tc_weight, config.model.recon, data_size)
    if config.objective in ("dip1", "dip2"):
        second = config.objective == "dip2"
        return dip_objective(out, x, lam, config.model.recon, second, config.dip_offdiag, config.dip_diag)
    return elbo_objective(out, x, lam, config.model.recon, config.free_bits, capacity if config.capacity > 0 else None)


# --------------------------------------------------------------------------- the objectives' gradients


class OutputGrads(NamedTuple):
    """An objective's gradients at the network's outputs: what a written-out step propagates back."""

    logits: torch.Tensor  # like out.logits
    mu: torch.Tensor | None  # (B, H): through the objective's own use of mu (the KL), not through z; None: none
    logvar: torch.Tensor  # (B, H): likewise, not through z
    z: torch.Tensor | None  # like out.z: through log p(z) in the importance weights, not through the decoder


def objective_grads(
    config: "TrainConfig", out: VAEOutput, x: torch.Tensor, eps: torch.Tensor, lam: float, capacity: float
) -> tuple[ObjectiveTerms, OutputGrads]:
    """objective_terms, and its gradients with respect to out's logits, mu, logvar and z, written out.

    Each product in autograd's order and each sum as autograd sums it, so that the gradients are
    autograd's to the last bit. ELBO: free bits pass the KL's gradient only in the dimensions whose
    batch mean is above F (clamp_min's), a capacity multiplies it by sign(KL - C) (abs's). IWAE:
    with w~_i = w_i / sum_j w_j, the gradient is -sum_i w~_i grad log w_i / B (logsumexp's).
    """
    kind, scale = config.model.recon, 1.0 / len(x)
    if config.objective == "iwae":
        terms, log_w, lse = _iwae(out, x, eps, kind)
        weights = torch.exp(log_w - lse).mul_(scale)  # (k, B): w~_i / B, minus the gradient at log w_i
        d_logits = reconstruction_nll_grad(out.logits, x, kind, weights.unsqueeze(-1))  # log p(x | z_i)
        d_z = out.z * weights.unsqueeze(-1)  # log p(z_i): d/dz -|z|^2 / 2
        # -log q(z_i | x) holds -1/2 log sigma^2: summed over the samples as autograd sums it, over (k, B, H)
        d_logvar = weights.mul(-0.5).unsqueeze(-1).expand_as(out.z).sum(0)
        return terms, OutputGrads(d_logits, None, d_logvar, d_z)
    terms = objective_terms(config, out, x, eps, lam, capacity)
    d_logits = reconstruction_nll_grad(out.logits, x, kind, scale)
    d_mu, d_logvar = kl_divergence_grad(out.mu, out.logvar, lam * scale)
    if config.capacity > 0:
        held: torch.Tensor | None = torch.sign(terms.kl - capacity)  # d|KL - C| / dKL, on the device
    elif config.free_bits:
        held = (kl_divergence_per_dim(out.mu, out.logvar).mean(0) > config.free_bits).to(d_mu.dtype)  # (H,)
    else:
        held = None
    if held is not None:
        d_mu.mul_(held)
        d_logvar.mul_(held)
    return terms, OutputGrads(d_logits, d_mu, d_logvar, None)
