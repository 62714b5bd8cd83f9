"""The latent space of a trained VAE as tensors: which z to decode, and what comes out.

Everything a figure shows is computed here, without matplotlib, so a notebook
(or a test) can use the numbers and images directly. Images are CPU tensors of
pixel means in [0, 1] (Bernoulli means for the default likelihood), never
thresholded.
"""

import math
from dataclasses import dataclass

import torch

from vaecli.choices import MAX_N
from vaecli.core.images import ImageRows
from vaecli.core.model import VAE
from vaecli.errors import ConfigError

INACTIVE_KL = 0.01  # nats: a dimension whose average KL is below this carries no information
TRAVERSE_RANGE = (-3.0, 3.0)  # +-3 prior standard deviations


def check_count(n: int, what: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ConfigError(f"{what} must be a whole number from 1 to {MAX_N}, got {n!r}")


def _device(model: VAE) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- which z to decode


def grid_axis(n: int, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """n coordinates along one grid axis, ascending: (n,) float64.

    Without `value_range`: the inverse normal CDF of (i + 0.5) / n, i = 0..n-1,
    so each tile stands for an equal share of the prior's mass (the grid of
    Kingma & Welling 2014, Fig. 4). With (lo, hi): n evenly spaced values from lo to hi.
    """
    check_count(n)
    if value_range is None:
        p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return torch.special.ndtri(p)
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ConfigError(f"range must be two finite numbers LO < HI, got {lo:g} {hi:g}")
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def check_dims(dims: tuple[int, ...], latent_dim: int) -> tuple[int, int]:
    """The two latent dimensions a 2-D grid varies, checked against the model's H."""
    dims = tuple(dims)
    if latent_dim < 2:
        raise ConfigError(
            f"a 2-D grid needs a model with H >= 2, this one has H={latent_dim}; "
            "`vaecli traverse` sweeps its one dimension"
        )
    if len(dims) != 2:
        raise ConfigError(f"dims must name exactly two latent dimensions, got {len(dims)}: {list(dims)}")
    if dims[0] == dims[1]:
        raise ConfigError(f"dims must be two different latent dimensions, got {dims[0]} twice")
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise ConfigError(f"dim {bad[0]} does not exist: the model has H={latent_dim}, dims 0 to {latent_dim - 1}")
    return dims[0], dims[1]


@dataclass(frozen=True)
class LatentGrid:
    """An n x n grid of codes; tile (row r, column c) decodes z[r * n + c].

    Columns go left to right through x_values, rows top to bottom through
    y_values reversed, so the larger y is at the top, as on a plot's axes.
    """

    z: torch.Tensor  # (n * n, H) float32
    x_values: torch.Tensor  # (n,) ascending: z[dims[0]] of each column
    y_values: torch.Tensor  # (n,) ascending: z[dims[1]] from the bottom row up
    dims: tuple[int, int]
    linear: bool  # True: evenly spaced (--range); False: inverse normal CDF

    @property
    def n(self) -> int:
        return len(self.x_values)


def grid_codes(
    n: int, latent_dim: int, dims: tuple[int, int] = (0, 1), value_range: tuple[float, float] | None = None
) -> LatentGrid:
    """Codes on a regular n x n grid over `dims`; every other dimension is held at 0."""
    dims = check_dims(dims, latent_dim)
    values = grid_axis(n, value_range)
    z = torch.zeros(n, n, latent_dim, dtype=torch.float64)
    z[:, :, dims[0]] = values[None, :]  # columns: x ascending left to right
    z[:, :, dims[1]] = values.flip(0)[:, None]  # rows: y descending top to bottom
    return LatentGrid(z.reshape(n * n, latent_dim).float(), values, values.clone(), dims, value_range is not None)


def prior_codes(n: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """n draws of z ~ N(0, I): (n, H), the same for the same seed whatever the global RNG."""
    check_count(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=generator)


def sweep_values(steps: int, value_range: tuple[float, float] = TRAVERSE_RANGE) -> torch.Tensor:
    """`steps` evenly spaced values across `value_range`: (steps,) float32."""
    check_count(steps, "steps")
    lo, hi = value_range
    return torch.linspace(lo, hi, steps)


def traversal_codes(base: torch.Tensor, dims: list[int], values: torch.Tensor) -> torch.Tensor:
    """Row k sweeps dimension dims[k] through `values`, the rest fixed at `base` (H,): (len(dims) * steps, H)."""
    z = base.detach().cpu().float().repeat(len(dims), len(values), 1)  # (rows, steps, H)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    return z.reshape(-1, base.shape[-1])


# ---------------------------------------------------------------- what the encoder says


@torch.no_grad()
def encode_means(model: VAE, images: ImageRows, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and logvar of every image (N, D): two (N, H) CPU tensors."""
    device = _device(model)
    mus, logvars = [], []
    for start in range(0, len(images), batch_size):
        mu, logvar = model.encode(images[start : start + batch_size].to(device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Average KL(q(z_j|x) || N(0, 1)) of each latent dimension over the images: (H,) nats.

    The per-dimension terms of loss.kl_divergence (Kingma & Welling 2014, App. B);
    they sum to the model's KL.
    """
    kl = 0.5 * (mu.double().pow(2) + logvar.double().exp() - 1 - logvar.double())  # (N, H)
    return kl.mean(dim=0)


def active_dims(kl: torch.Tensor, threshold: float = INACTIVE_KL) -> torch.Tensor:
    """(H,) bool: True where a dimension's average KL reaches `threshold` nats."""
    return kl >= threshold


def top_dims(kl: torch.Tensor, k: int | None = None) -> list[int]:
    """The k dimensions with the largest average KL, largest first; all of them, in order, when k is None."""
    if k is None:
        return list(range(len(kl)))
    if k < 1:
        raise ConfigError(f"top must be at least 1, got {k}")
    order = sorted(range(len(kl)), key=lambda d: (-float(kl[d]), d))
    return order[: min(k, len(kl))]


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of codes, and how they were made."""

    coords: torch.Tensor  # (N, 2), or (N, 1) when H = 1
    axis_labels: tuple[str, ...]
    explained: tuple[float, ...] | None  # variance share of each principal component, None without PCA


def pca(codes: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Principal components of codes (N, H): (projected (N, k), components (k, H), explained variance ratio (k,)).

    Each component's sign is fixed so that its largest entry is positive: the
    same codes give the same picture every time.
    """
    x = codes.double()
    centered = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    components = vh[:k]
    largest = components.gather(1, components.abs().argmax(dim=1, keepdim=True))
    components = components * torch.sign(largest)
    variance = s.pow(2)
    return centered @ components.T, components, (variance / variance.sum())[:k]


def project(codes: torch.Tensor) -> Projection:
    """Codes (N, H) as at most 2-D points: themselves for H <= 2, else the first two principal components."""
    h = codes.shape[1]
    if h <= 2:
        return Projection(codes.double(), tuple(f"z[{d}]" for d in range(h)), None)
    coords, _, ratio = pca(codes, 2)
    explained = tuple(float(r) for r in ratio)
    labels = tuple(f"PC{i + 1} of the mean codes ({100 * r:.0f}% of variance)" for i, r in enumerate(explained))
    return Projection(coords, labels, explained)


# ---------------------------------------------------------------- what the decoder makes


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Pixel means of codes z (N, H): (N, height, width) CPU float32 in [0, 1]."""
    pixels = model.decode_mean(z.to(_device(model), torch.float32)).cpu()
    return pixels.reshape(len(z), *model.config.image_shape)


@torch.no_grad()
def reconstruct(model: VAE, images: torch.Tensor) -> torch.Tensor:
    """Mean decoding: each image (N, D) encoded to mu and decoded without noise: (N, height, width)."""
    mu, _ = model.encode(images.to(_device(model)))
    return decode(model, mu)


def tile(images: torch.Tensor, nrow: int, pad: int = 0, fill: float = 1.0) -> torch.Tensor:
    """Images (N, h, w) as one mosaic, `nrow` per row, `pad` pixels of `fill` between them.

    Returns (rows * (h + pad) - pad, nrow * (w + pad) - pad); empty places at the end are `fill`.
    """
    if nrow < 1:
        raise ConfigError(f"nrow must be at least 1, got {nrow}")
    n, h, w = images.shape
    rows = max(1, math.ceil(n / nrow))
    mosaic = torch.full((rows * (h + pad) - pad, nrow * (w + pad) - pad), fill, dtype=images.dtype)
    for i in range(n):
        r, c = divmod(i, nrow)
        mosaic[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[i]
    return mosaic


def default_nrow(n: int) -> int:
    """Tiles per row for n images: as square as the count allows."""
    return math.ceil(math.sqrt(n))


def sample_images(model: VAE, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images decoded from z ~ N(0, I): (images (n, h, w), z (n, H))."""
    z = prior_codes(n, model.config.latent_dim, seed)
    return decode(model, z), z


def manifold_image(
    model: VAE, n: int = 20, dims: tuple[int, int] = (0, 1), value_range: tuple[float, float] | None = None
) -> tuple[torch.Tensor, LatentGrid]:
    """The 2-D manifold as one mosaic (n * h, n * w) without gaps, and the grid of codes it decodes."""
    grid = grid_codes(n, model.config.latent_dim, dims, value_range)
    return tile(decode(model, grid.z), n), grid


def pick(count: int, n: int, seed: int = 0) -> torch.Tensor:
    """n distinct indices out of `count`, chosen by `seed`: (n,) int64."""
    check_count(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[: min(n, count)]


def reconstruction_image(
    model: VAE, images: torch.Tensor, nrow: int = 8, pad: int = 1, gap: int = 6, fill: float = 1.0
) -> torch.Tensor:
    """Images (N, D) and their mean decodings as paired rows: a row of inputs, below it their reconstructions.

    Rows are `pad` pixels apart within a pair and `gap` pixels between pairs.
    """
    h, w = model.config.image_shape
    inputs = images.detach().cpu().float().reshape(len(images), h, w)
    outputs = reconstruct(model, images)
    pairs = []
    for start in range(0, len(images), nrow):
        top = tile(inputs[start : start + nrow], nrow, pad, fill)
        bottom = tile(outputs[start : start + nrow], nrow, pad, fill)
        pairs.append(torch.cat([top, torch.full((pad, top.shape[1]), fill), bottom]))
    pieces = []
    for k, pair in enumerate(pairs):
        if k:
            pieces.append(torch.full((gap, pair.shape[1]), fill))
        pieces.append(pair)
    return torch.cat(pieces)


def traversal_image(
    model: VAE, base: torch.Tensor, dims: list[int], values: torch.Tensor, pad: int = 1, fill: float = 1.0
) -> torch.Tensor:
    """One row per dimension in `dims`, one column per value, the rest of z at `base` (H,): a mosaic."""
    return tile(decode(model, traversal_codes(base, dims, values)), len(values), pad, fill)
