"""Part 5 of `vaecli derive`: the KL term split into mutual information, total correlation and
dimension-wise KL (Chen et al. 2018), each part computed by quadrature over a small data set.

With N images and H = 2 the aggregate posterior q(z) = (1/N) sum_n q(z | x_n) is a mixture of N
Gaussians, so every part is an integral over a 2-D grid (its marginals over 1-D ones). The
checks: the three parts add up to the mean closed-form KL; the mutual information is at most
log N; and beta-TCVAE's minibatch-stratified estimator (core/loss.kl_parts), averaged over many
draws with the whole set as its batch, lands on each part.
"""

import math

import torch

from vaecli.core import loss
from vaecli.core.images import ImageRows
from vaecli.core.latent import encode_means
from vaecli.core.model import VAE
from vaecli.studies.identities import BOUND_TOL, IDENTITY_TOL, Check

GRID = 600  # nodes per latent axis
RADIUS = 7.0  # posterior standard deviations the box reaches beyond every mean
DRAWS = 400  # draws of the estimator, each with the whole set as its batch
ESTIMATOR_TOL = 0.05  # nats: the estimator's bias with a batch of N, beside its Monte-Carlo error


def _axes(mu: torch.Tensor, std: torch.Tensor) -> list[torch.Tensor]:
    lo, hi = (mu - RADIUS * std).min(0).values, (mu + RADIUS * std).max(0).values
    return [torch.linspace(float(a), float(b), GRID, dtype=torch.float64) for a, b in zip(lo, hi, strict=True)]


def parts_by_quadrature(mu: torch.Tensor, logvar: torch.Tensor) -> loss.KlParts:
    """MI, TC and dimension-wise KL of N diagonal Gaussian posteriors (N, 2), uniform over the N images."""
    mu, logvar = mu.double(), logvar.double()
    n = len(mu)
    axes = _axes(mu, (0.5 * logvar).exp())
    steps = [float(a[1] - a[0]) for a in axes]
    # per axis: log q(z_j | x_n) at its nodes, (N, G), and the marginal log q(z_j), (G,)
    per_axis = [
        -0.5 * (loss.LOG_2PI + logvar[:, j, None] + (a[None] - mu[:, j, None]) ** 2 / logvar[:, j, None].exp())
        for j, a in enumerate(axes)
    ]
    marginals = [torch.logsumexp(p, 0) - math.log(n) for p in per_axis]
    joint = per_axis[0][:, :, None] + per_axis[1][:, None, :]  # (N, G, G): log q(z | x_n)
    log_qz = torch.logsumexp(joint, 0) - math.log(n)  # (G, G)
    cell = steps[0] * steps[1]
    q_given = joint.exp()
    mi = float((q_given * (joint - log_qz)).sum() * cell / n)
    product = marginals[0][:, None] + marginals[1][None, :]
    tc = float((log_qz.exp() * (log_qz - product)).sum() * cell)
    dim_kl = 0.0
    for marginal, a, step in zip(marginals, axes, steps, strict=True):
        log_p = -0.5 * (loss.LOG_2PI + a**2)
        dim_kl += float((marginal.exp() * (marginal - log_p)).sum() * step)
    return loss.KlParts(torch.tensor(mi), torch.tensor(tc), torch.tensor(dim_kl))


def decomposition_checks(model: VAE, images: ImageRows, seed: int = 0) -> list[Check]:
    """Part 5's checks on `model`'s posteriors of `images` (N of them, H = 2), the data set being those N."""
    mu, logvar = (t.double() for t in encode_means(model.eval(), images))
    n = len(mu)
    exact = parts_by_quadrature(mu, logvar)
    kl = float(loss.kl_divergence(mu.double(), logvar.double()).mean())
    how = f"quadrature over a {GRID} x {GRID} grid reaching {RADIUS:g} sigma past every one of the {n} posteriors"
    checks = [
        Check(5, "MI + TC + dimension-wise KL = the mean KL", "MI + TC + dim-KL", float(sum(exact)),
              "mean closed-form KL", kl, "=", IDENTITY_TOL, how),
        Check(5, "the index-code mutual information is at most log N", "MI", float(exact.mi),
              "log N", math.log(n), "≤", BOUND_TOL, how),
    ]  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    std = (0.5 * logvar).exp()
    draws = []
    for _ in range(DRAWS):
        z = mu + std * torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        draws.append(torch.stack(list(loss.kl_parts(z, mu, logvar, n))))
    estimates = torch.stack(draws).double()  # (DRAWS, 3)
    means, errors = estimates.mean(0), estimates.std(0) / math.sqrt(DRAWS)
    for name, index in (("MI", 0), ("TC", 1), ("dimension-wise KL", 2)):
        checks.append(
            Check(
                5,
                f"the stratified estimator finds the {name}",
                f"{name}, estimated",
                float(means[index]),
                f"{name} by quadrature",
                float(exact[index]),
                "=",
                4 * float(errors[index]) + ESTIMATOR_TOL,
                f"beta-TCVAE's minibatch-stratified estimator, mean of {DRAWS} draws with all {n} images "
                "as the batch; its bias with a batch of N, then 4 standard errors",
            )  # fmt: skip
        )
    return checks
