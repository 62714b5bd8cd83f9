"""The numbers behind the figures, without matplotlib: grid codes, KL per dimension, PCA, mosaics."""

import pytest
import torch

from vaecli.config import ModelConfig
from vaecli.core import latent
from vaecli.core.loss import kl_divergence
from vaecli.core.model import VAE
from vaecli.errors import ConfigError


def tiny_model(latent_dim: int = 2, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(latent_dim=latent_dim, hidden_layers=(16,))).eval()


def normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / 2**0.5))


@pytest.mark.parametrize("n", [1, 2, 5, 20, 100])
def test_grid_axis_is_the_inverse_normal_cdf_of_evenly_spaced_points(n):
    values = latent.grid_axis(n)
    expected = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    assert torch.allclose(normal_cdf(values), expected, atol=1e-12)
    assert torch.allclose(values, -values.flip(0), atol=1e-12)  # symmetric about 0
    assert bool((values[1:] > values[:-1]).all())


def test_grid_axis_known_values():
    assert latent.grid_axis(1).tolist() == [0.0]
    assert latent.grid_axis(20)[-1].item() == pytest.approx(1.959964, abs=1e-6)  # Phi^-1(0.975)


def test_grid_axis_with_a_range_is_evenly_spaced():
    assert latent.grid_axis(7, (-3, 3)).tolist() == pytest.approx([-3, -2, -1, 0, 1, 2, 3])
    with pytest.raises(ConfigError, match="LO < HI"):
        latent.grid_axis(5, (3, -3))


@pytest.mark.parametrize("n", [0, 101, -3])
def test_counts_out_of_range_are_refused(n):
    with pytest.raises(ConfigError, match="from 1 to 100"):
        latent.grid_axis(n)


def test_grid_codes_put_x_on_columns_and_y_upwards_on_rows():
    n = 4
    grid = latent.grid_codes(n, latent_dim=5, dims=(3, 1))
    z = grid.z.reshape(n, n, 5)
    for r in range(n):
        for c in range(n):
            assert z[r, c, 3].item() == pytest.approx(grid.x_values[c].item())
            assert z[r, c, 1].item() == pytest.approx(grid.y_values[n - 1 - r].item())
    assert z[..., [0, 2, 4]].abs().max() == 0  # the other dimensions are held at 0
    assert z[0, 0, 1] > z[-1, 0, 1]  # the top row has the largest y


@pytest.mark.parametrize(
    "dims, latent_dim, message",
    [
        ((0, 0), 3, "two different"),
        ((0, 3), 3, "dim 3 does not exist"),
        ((0,), 3, "exactly two"),
        ((0, 1, 2), 3, "exactly two"),
        ((0, 1), 1, "H >= 2"),
    ],
)
def test_bad_dims(dims, latent_dim, message):
    with pytest.raises(ConfigError, match=message):
        latent.check_dims(dims, latent_dim)


def test_manifold_tile_is_the_decode_of_its_z():
    model = tiny_model(3)
    n, h = 5, 28
    mosaic, grid = latent.manifold_image(model, n, dims=(2, 0))
    assert mosaic.shape == (n * h, n * h)
    r, c = 1, 3
    z = torch.zeros(1, 3)
    z[0, 2], z[0, 0] = grid.x_values[c], grid.y_values[n - 1 - r]
    tile = mosaic[r * h : (r + 1) * h, c * h : (c + 1) * h]
    assert torch.allclose(tile, latent.decode(model, z)[0], atol=1e-6)


def test_prior_codes_follow_the_seed():
    a, b, c = (latent.prior_codes(8, 2, seed) for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(123)  # the global RNG has no say
    assert torch.equal(latent.prior_codes(8, 2, 1), a)


def test_samples_are_pixel_means_not_thresholded():
    images, z = latent.sample_images(tiny_model(), 16, seed=0)
    assert images.shape == (16, 28, 28) and z.shape == (16, 2)
    assert images.min() >= 0 and images.max() <= 1
    assert ((images > 0.01) & (images < 0.99)).any()


def test_kl_per_dim_sums_to_the_models_kl():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    per_dim = latent.kl_per_dim(mu, logvar)
    assert per_dim.shape == (4,)
    assert per_dim.sum().item() == pytest.approx(kl_divergence(mu, logvar).mean().item(), rel=1e-5)


def test_a_dimension_at_the_prior_is_inactive():
    mu = torch.tensor([[1.0, 0.0, 0.05], [-1.0, 0.0, -0.05]])
    kl = latent.kl_per_dim(mu, torch.zeros_like(mu))
    assert kl.tolist() == pytest.approx([0.5, 0.0, 0.00125])
    assert latent.active_dims(kl).tolist() == [True, False, False]


def test_top_dims_orders_by_kl():
    kl = torch.tensor([0.1, 3.0, 0.0, 1.0])
    assert latent.top_dims(kl, 2) == [1, 3]
    assert latent.top_dims(kl, 10) == [1, 3, 0, 2]
    assert latent.top_dims(kl) == [0, 1, 2, 3]


def test_pca_finds_the_direction_of_largest_variance():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(500, generator=g)
    direction = torch.tensor([3.0, 0.0, 4.0, 0.0]) / 5
    codes = t[:, None] * 10 * direction + 0.1 * torch.randn(500, 4, generator=g)
    projected, components, explained = latent.pca(codes)
    assert projected.shape == (500, 2) and components.shape == (2, 4)
    assert torch.allclose(components[0], direction.double(), atol=0.01)  # sign fixed: largest entry positive
    assert explained[0] > 0.99 and explained.sum() <= 1
    assert torch.equal(latent.pca(-codes)[1], components)  # the sign rule, not the data's sign, decides


def test_project_uses_pca_only_above_two_dimensions():
    codes = torch.randn(30, 2)
    assert latent.project(codes).axis_labels == ("z[0]", "z[1]")
    assert torch.equal(latent.project(codes).coords, codes.double())
    three = latent.project(torch.randn(30, 3))
    assert three.coords.shape == (30, 2) and three.axis_labels[0].startswith("PC1") and three.explained


def test_traversal_codes_sweep_one_dimension_per_row():
    base = torch.tensor([0.5, -1.0, 2.0])
    values = latent.sweep_values(5)
    assert values.tolist() == [-3, -1.5, 0, 1.5, 3]
    z = latent.traversal_codes(base, [2, 0], values).reshape(2, 5, 3)
    assert z[0, :, 2].tolist() == values.tolist() and (z[0, :, :2] == base[:2]).all()
    assert z[1, :, 0].tolist() == values.tolist() and (z[1, :, 1:] == base[1:]).all()


def test_tile_places_images_row_by_row():
    images = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 2, 3)
    mosaic = latent.tile(images, nrow=3, pad=1, fill=-1)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1)
    assert mosaic[0, 0] == 0 and mosaic[0, 4] == 1 and mosaic[3, 4] == 4
    assert mosaic[2, 0] == -1 and mosaic[3, 8] == -1  # padding, and the empty sixth place


def test_reconstruction_rows_pair_inputs_with_their_decodes():
    model = tiny_model()
    images = torch.rand(10, 784, generator=torch.Generator().manual_seed(0))
    mosaic = latent.reconstruction_image(model, images, nrow=5, pad=1, gap=6)
    assert mosaic.shape == (2 * (28 + 1 + 28) + 6, 5 * 29 - 1)
    assert torch.equal(mosaic[:28, :28], images[0].reshape(28, 28))
    assert torch.allclose(mosaic[29 : 29 + 28, :28], latent.reconstruct(model, images[:1])[0])


def test_pick_is_seeded_and_distinct():
    a = latent.pick(100, 10, seed=3)
    assert torch.equal(a, latent.pick(100, 10, seed=3)) and len(set(a.tolist())) == 10
    assert len(latent.pick(4, 10)) == 4
