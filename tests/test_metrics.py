import math

import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.loss import reconstruction_nll
from vaecli.core.model import VAE
from vaecli.engine.records import evaluate, scored_test_images
from vaecli.studies.scores import active_units, importance_weighted_nll, kl_per_dimension, run_metrics

SMALL_MODEL = ModelConfig(latent_dim=2, hidden_layers=(32, 16))


def _model(latent_dim: int, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(latent_dim=latent_dim, hidden_layers=(16,))).eval()


def _images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1))


def _log_px_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) over a dense grid, for H = 1."""
    z = torch.linspace(-9, 9, 20001).unsqueeze(1)  # (G, 1)
    dz = (z[1] - z[0]).item()
    with torch.no_grad():
        logits = model.decode(z)  # (G, D)
        log_px_z = torch.stack([-reconstruction_nll(logits, xi.expand_as(logits), "bernoulli") for xi in x])  # (N, G)
    log_prior = -0.5 * (z.squeeze(1) ** 2 + math.log(2 * math.pi))
    return torch.logsumexp(log_px_z + log_prior, dim=1) + math.log(dz)


def test_importance_weighted_bound_converges_to_log_px():
    model, x = _model(1), _images()
    exact = -_log_px_by_quadrature(model, x).mean().item()
    g = torch.Generator().manual_seed(0)
    elbo_like = importance_weighted_nll(model, x, 1, g)
    tight = importance_weighted_nll(model, x, 5000, g)
    neg_elbo = evaluate(model, x, torch.Generator().manual_seed(0)).neg_elbo
    assert tight >= exact - 0.05  # a bound: never below -log p(x) beyond Monte-Carlo noise
    assert tight - exact < 0.1  # and with k = 5000 it is tight
    assert tight < elbo_like and abs(elbo_like - neg_elbo) < 0.2 * neg_elbo


def test_kl_per_dimension_sums_to_the_kl():
    model, x = _model(3), _images(20)
    per_dim = kl_per_dimension(model, x)
    assert per_dim.shape == (3,) and (per_dim >= 0).all()
    assert math.isclose(per_dim.sum().item(), evaluate(model, x).kl, rel_tol=1e-4)


def test_active_units_count_dimensions_whose_mean_code_varies():
    model, x = _model(3), _images(50)
    with torch.no_grad():
        model.mu.weight.mul_(10)  # an untrained encoder's mean codes barely vary (var ~0.005)
    assert active_units(model, x) == 3
    with torch.no_grad():
        model.mu.weight[1].zero_()  # dimension 1's mean code is now the same for every image
    assert active_units(model, x) == 2


def test_run_metrics_are_seeded_and_complete():
    model, x = _model(2), _images(10)
    a, b = run_metrics(model, x, iw_samples=20, seed=3), run_metrics(model, x, iw_samples=20, seed=3)
    assert a == b and a.latent_dim == 2 and len(a.kl_per_dim) == 2 and a.iw_samples == 20
    assert a.iw_nll < a.neg_elbo + 1.0 and math.isclose(a.neg_elbo, a.recon + a.kl)


def test_binarized_runs_score_a_fixed_binarization():
    x = _images(5)
    cfg = TrainConfig(binarize=True)
    once, again = scored_test_images(x, cfg).float(), scored_test_images(x, cfg).float()
    assert torch.equal(once, again) and set(once.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(scored_test_images(x, TrainConfig()).float(), x.reshape(len(x), -1))


def test_evaluation_does_not_depend_on_its_batch_size():
    model = VAE(SMALL_MODEL)
    images = torch.rand(50, 784, generator=torch.Generator().manual_seed(1))
    whole = evaluate(model, images, torch.Generator().manual_seed(2))
    pieces = evaluate(model, images, torch.Generator().manual_seed(2), batch_size=16)
    # the same model and images; only the noise is drawn in other chunks
    assert whole.recon == pytest.approx(pieces.recon, rel=1e-3)
    assert whole.kl == pytest.approx(pieces.kl, rel=1e-2)
