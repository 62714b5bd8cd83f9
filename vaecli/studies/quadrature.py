"""Integrals over the latent space of one image: log p(x) and p(z|x) on a grid, and E_q[f(z)].

With H <= 2 latents, log p(x) = log ∫ p(x|z) p(z) dz is a plain sum over the
nodes of a grid (the midpoint rule), done in log space. For a smooth integrand
that vanishes at the edges of the box, the error of that sum falls faster than
any power of the spacing: a few nodes per posterior standard deviation, over a
box that holds all of p(z|x), give log p(x) to many digits. `choose_grid` finds
such a box and spacing for a given model and image; `Posterior.edge_mass` says
whether the box was wide enough.

Expectations under a Gaussian q = N(mu, diag sigma^2) use a second grid, in q's
own coordinates (z = mu + sigma * eps): an independent rule, so comparing the
two tests both.

Everything is computed in the dtype of the model passed in; use `as_float64`
first, since float32 sums of 784 pixel terms are good to only ~1e-3 nats.
"""

import copy
import math
from dataclasses import dataclass
from functools import cached_property

import torch

from vaecli.core import loss
from vaecli.core.model import VAE
from vaecli.errors import ConfigError

MAX_LATENT_DIM = 2  # a grid of n^H nodes: beyond 2 dimensions it is too many
LOG_2PI = math.log(2 * math.pi)


def as_float64(model: VAE) -> VAE:
    """A float64 copy of `model` in eval mode on the CPU; the original is left alone."""
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()


@dataclass(frozen=True)
class Grid:
    """A box [lo, hi] per latent dimension cut into n equal cells; nodes at the cell centres."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.lo) == len(self.hi) == len(self.n)) or not self.n:
            raise ConfigError(f"a grid needs lo, hi and n for each dimension; got {self.lo}, {self.hi}, {self.n}")
        if any(h <= lo for lo, h in zip(self.lo, self.hi, strict=True)) or min(self.n) < 2:
            raise ConfigError(f"a grid needs hi > lo and n >= 2 in every dimension; got {self}")

    @property
    def dim(self) -> int:
        return len(self.n)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple((h - lo) / n for lo, h, n in zip(self.lo, self.hi, self.n, strict=True))

    @property
    def cell(self) -> float:
        """Volume of one cell: the weight of every node in the midpoint rule."""
        return math.prod(self.spacing)

    @property
    def size(self) -> int:
        return math.prod(self.n)

    def axes(self) -> list[torch.Tensor]:
        return [
            lo + (torch.arange(n, dtype=torch.float64) + 0.5) * h
            for lo, n, h in zip(self.lo, self.n, self.spacing, strict=True)
        ]

    def nodes(self) -> torch.Tensor:
        """(size, H) node coordinates, the last dimension varying fastest."""
        mesh = torch.meshgrid(*self.axes(), indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)

    def shifted(self, offset: float) -> "Grid":
        """The same grid moved by `offset` in every dimension."""
        return Grid(tuple(v + offset for v in self.lo), tuple(v + offset for v in self.hi), self.n)

    def describe(self) -> str:
        box = " × ".join(f"[{lo:.3g}, {h:.3g}]" for lo, h in zip(self.lo, self.hi, strict=True))
        nodes = " × ".join(map(str, self.n))
        spacing = ", ".join(f"{h:.3g}" for h in self.spacing)
        return f"{nodes} nodes over {box}, spacing {spacing}"


def log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per row: (N, H) -> (N,)."""
    return -0.5 * (z.pow(2).sum(dim=1) + z.shape[1] * LOG_2PI)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) per row: (N, H), (H,), (H,) -> (N,)."""
    return -0.5 * (((z - mu).pow(2) / logvar.exp()) + logvar + LOG_2PI).sum(dim=1)


@torch.no_grad()
def log_likelihood(model: VAE, x: torch.Tensor, z: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """log p(x|z) for one image x (D,) at each row of z (N, H): (N,).

    It is minus the loss's reconstruction term, so the checks test the loss's
    own likelihood (for `gaussian`, without the constant D/2 log pi the loss drops).
    """
    dtype = next(model.parameters()).dtype
    x = x.reshape(1, -1).to(dtype)
    z = z.to(dtype)
    parts = []
    for start in range(0, len(z), batch_size):
        logits = model.decode(z[start : start + batch_size])
        parts.append(-loss.reconstruction_nll(logits, x.expand_as(logits), model.config.recon))
    return torch.cat(parts)


def log_joint(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x, z) = log p(x|z) + log p(z): (N,)."""
    return log_likelihood(model, x, z) + log_prior(z.to(torch.float64)).to(next(model.parameters()).dtype)


@dataclass(frozen=True)
class Posterior:
    """p(z|x) on a grid: the joint at every node, and log p(x) as their sum."""

    grid: Grid
    z: torch.Tensor  # (N, H) nodes
    log_joint: torch.Tensor  # (N,) log p(x, z) at the nodes

    @cached_property
    def log_px(self) -> float:
        """log p(x) = log Σ p(x, z_i) · cell."""
        return float(torch.logsumexp(self.log_joint.double(), dim=0)) + math.log(self.grid.cell)

    @property
    def log_density(self) -> torch.Tensor:
        """log p(z_i|x) = log p(x, z_i) - log p(x) at the nodes: a density that integrates to 1 on the grid."""
        return self.log_joint.double() - self.log_px

    @property
    def mass(self) -> torch.Tensor:
        """The posterior probability of each cell: (N,), summing to 1."""
        return torch.exp(self.log_density) * self.grid.cell

    @property
    def mean(self) -> torch.Tensor:
        return self.mass @ self.z

    @property
    def var(self) -> torch.Tensor:
        return self.mass @ (self.z - self.mean).pow(2)

    @property
    def edge_mass(self) -> float:
        """Posterior probability of the outermost ring of cells: ~0 when the box holds p(z|x)."""
        index = torch.stack(torch.meshgrid(*[torch.arange(n) for n in self.grid.n], indexing="ij"), -1)
        index = index.reshape(-1, self.grid.dim)
        on_edge = ((index == 0) | (index == torch.tensor(self.grid.n) - 1)).any(dim=1)
        return float(self.mass[on_edge].sum())


def quadrature(model: VAE, x: torch.Tensor, grid: Grid) -> Posterior:
    """log p(x) and p(z|x) for one image x (D,) on `grid`."""
    if grid.dim != model.config.latent_dim:
        raise ConfigError(f"the grid has {grid.dim} dimensions but the model's latent_dim is {model.config.latent_dim}")
    z = grid.nodes()
    return Posterior(grid, z, log_joint(model, x, z).double())


def _box(lo: torch.Tensor, hi: torch.Tensor, *boxes: tuple[torch.Tensor, torch.Tensor]) -> tuple:
    for other_lo, other_hi in boxes:
        lo, hi = torch.minimum(lo, other_lo), torch.maximum(hi, other_hi)
    return lo, hi


def choose_grid(
    model: VAE,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    radius: float = 6.0,
    scan_nodes: int = 10_000,
    nodes_per_sd: float = 6.0,
    q_sds: float = 9.0,
    max_nodes: int = 250_000,
) -> Grid:
    """A grid that holds both p(z|x) and q = N(mu, diag exp(logvar)) (each (H,)), fine enough for both.

    First a scan over [-radius, radius]^H (and q's box) finds where p(z|x) lives:
    every node whose joint is within 40 nats of the largest. The grid's box holds
    those nodes plus a margin and q's mean ± q_sds standard deviations; its
    spacing puts `nodes_per_sd` nodes in the smallest standard deviation of q and
    of p(z|x) (measured on a first fine grid), up to `max_nodes` nodes in all.
    """
    dim = model.config.latent_dim
    if dim > MAX_LATENT_DIM:
        raise ConfigError(f"quadrature over z needs latent_dim <= {MAX_LATENT_DIM}, got {dim}")
    mu, sd = mu.double().reshape(-1), (0.5 * logvar.double().reshape(-1)).exp()
    q_box = (mu - q_sds * sd, mu + q_sds * sd)
    lo, hi = _box(
        torch.full((dim,), -radius, dtype=torch.float64), torch.full((dim,), radius, dtype=torch.float64), q_box
    )
    per_axis = max(2, int(round(scan_nodes ** (1 / dim))))
    scan = quadrature(model, x, Grid(tuple(lo.tolist()), tuple(hi.tolist()), (per_axis,) * dim))

    def fine(post: Posterior, floor: torch.Tensor) -> Grid:
        keep = post.z[post.log_joint >= post.log_joint.max() - 40.0]
        margin = 2 * torch.tensor(post.grid.spacing, dtype=torch.float64)
        box_lo, box_hi = _box(keep.min(dim=0).values - margin, keep.max(dim=0).values + margin, q_box)
        step = floor / nodes_per_sd
        n = torch.ceil((box_hi - box_lo) / step).clamp(min=16).long()
        # too many nodes: coarsen every axis by the same factor
        factor = (n.prod().item() / max_nodes) ** (1 / dim)
        if factor > 1:
            n = torch.ceil(n / factor).clamp(min=2).long()
        return Grid(tuple(box_lo.tolist()), tuple(box_hi.tolist()), tuple(n.tolist()))

    first = quadrature(model, x, fine(scan, torch.minimum(sd, scan.var.sqrt().clamp(min=1e-6))))
    return fine(first, torch.minimum(sd, first.var.sqrt().clamp(min=1e-6)))


def expect_gaussian(f, mu: torch.Tensor, logvar: torch.Tensor, step: float = 0.2, radius: float = 7.0) -> float:
    """E_q[f(z)] under q = N(mu, diag exp(logvar)) (each (H,)) by the midpoint rule in q's own coordinates.

    `f` maps (N, H) points to (N,) values. The nodes are z = mu + sigma * eps on a
    grid over eps in [-radius, radius]^H with `step`, weighted by the normal density
    and normalised. Gauss-Hermite would need fewer nodes for a smooth f, but a ReLU
    decoder has kinks, and there the midpoint rule converges more reliably.
    """
    dim = mu.numel()
    per_axis = int(math.ceil(2 * radius / step))
    if per_axis**dim > 1_000_000:
        raise ConfigError(f"a grid of {per_axis} nodes per axis in {dim} dimensions is too many")
    axis = -radius + (torch.arange(per_axis, dtype=torch.float64) + 0.5) * (2 * radius / per_axis)
    eps = torch.stack([m.reshape(-1) for m in torch.meshgrid(*[axis] * dim, indexing="ij")], dim=1)
    weights = torch.exp(-0.5 * eps.pow(2).sum(dim=1))
    z = mu.double().reshape(1, -1) + (0.5 * logvar.double().reshape(1, -1)).exp() * eps
    return float((weights * f(z).double()).sum() / weights.sum())
