"""The importance-weighted bound decoded in blocks (engine/bound.py) against the code it replaced."""

import math

import pytest
import torch

from vaecli.config import ModelConfig
from vaecli.core.loss import log_posterior, log_prior, reconstruction_nll
from vaecli.core.model import VAE
from vaecli.engine.bound import BlockDecoder, importance_weighted_nll


@torch.inference_mode()
def reference_bound(
    model: VAE, images: torch.Tensor, k: int, generator: torch.Generator, batch_size: int = 500, chunk: int = 50
) -> float:
    """importance_weighted_nll before blocks, as it was: one sample of every image per decode."""
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        log_weights = []
        for done in range(0, k, chunk):
            n = min(chunk, k - done)
            eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps
            log_px_z = torch.stack([-reconstruction_nll(model.decode(z_i), x, model.config.recon) for z_i in z])
            log_weights.append(log_px_z + log_prior(z) - log_posterior(eps, logvar))
        log_px = torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)
        total += -log_px.double().sum().item()
    return total / len(images)


def _model(recon: str, hidden_layers: tuple[int, ...] = (32, 16)) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(latent_dim=3, hidden_layers=hidden_layers, recon=recon)).eval()


def _images(n: int = 7) -> torch.Tensor:
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1))


def _bounds(model: VAE, x: torch.Tensor, k: int, decoder: BlockDecoder | None = None) -> tuple[float, float]:
    """(the new code's bound, the reference's), from the same draws."""
    new = importance_weighted_nll(model, x, k, torch.Generator().manual_seed(2), batch_size=4, decoder=decoder)
    return new, reference_bound(model, x, k, torch.Generator().manual_seed(2), batch_size=4)


@pytest.mark.parametrize("recon", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("layers", ["onednn", "addmm"])
@pytest.mark.parametrize("hidden_layers", [(32, 16), ()])
def test_blocks_give_the_bound_of_one_sample_at_a_time(recon, layers, hidden_layers):
    model = _model(recon, hidden_layers)
    decoder = BlockDecoder(model, rows=4 * 3)  # 3 samples of 4 images a block: blocks of 3 and 2 in a chunk of 50
    if layers == "addmm":
        decoder.onednn = None  # the layers as on a GPU, or a torch without oneDNN
    new, reference = _bounds(model, _images(), 123, decoder)  # batches of 4 and 3 images; k: chunks of 50, 50, 23
    assert new == pytest.approx(reference, rel=1e-4)


@pytest.mark.parametrize("recon", ["bernoulli", "gaussian"])
def test_the_default_blocks_give_the_same_bound(recon):
    model = _model(recon)
    new, reference = _bounds(model, _images(), 77)
    assert new == pytest.approx(reference, rel=1e-4)


def test_logits_whose_exp_overflows_take_the_stable_softplus():
    model = _model("bernoulli")
    with torch.no_grad():
        model.decoder[-1].bias[:100] = 120.0  # exp(120) is inf in float32: these pixels are on with certainty
    x = _images()
    x[:, :100] = 1.0
    new, reference = _bounds(model, x, 60, BlockDecoder(model, rows=8))
    assert math.isfinite(new) and new == pytest.approx(reference, rel=1e-4)


def test_a_block_holds_at_most_its_rows_and_one_sample_at_least():
    decoder = BlockDecoder(_model("bernoulli"), rows=4000)
    assert decoder.blocks(500, 50) == 7  # 8 samples of 500 images at most: 7 blocks of 7 or 8
    assert decoder.blocks(500, 5) == 1
    assert decoder.blocks(8000, 50) == 50  # more images than rows: one sample of each a block
