import math

import pytest
import torch

from vaecli.config import ModelConfig
from vaecli.core.loss import bernoulli_nll, kl_divergence, reconstruction_nll, reconstruction_nll_sum, vae_loss
from vaecli.core.model import VAE


def test_shapes_follow_the_config():
    model = VAE(ModelConfig(latent_dim=3, hidden_layers=(32, 16)))
    x = torch.rand(5, 784)
    out = model(x)
    assert out.logits.shape == (5, 784)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, 3)
    assert model.decode_mean(out.z).min() >= 0 and model.decode_mean(out.z).max() <= 1
    # the decoder mirrors the encoder
    sizes = [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert sizes == [16, 32, 784]


def test_no_hidden_layers_is_a_linear_vae():
    model = VAE(ModelConfig(latent_dim=2, hidden_layers=()))
    assert model(torch.rand(4, 784)).logits.shape == (4, 784)


def test_reparameterization_uses_mu_and_sigma():
    mu, logvar = torch.full((20000, 1), 3.0), torch.full((20000, 1), math.log(4.0))
    z = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 3.0) < 0.05
    assert abs(z.std().item() - 2.0) < 0.05


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(4, 3)
    assert torch.allclose(kl_divergence(zeros, zeros), torch.zeros(4))
    assert (kl_divergence(torch.randn(4, 3), torch.randn(4, 3)) > 0).all()


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[-0.7, 0.4]])
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(400_000, 2, generator=g)
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    samples = log_q - log_p
    mc, stderr = samples.mean().item(), samples.std().item() / math.sqrt(len(samples))
    assert abs(kl_divergence(mu, logvar).item() - mc) < 4 * stderr


def test_bernoulli_recon_is_summed_bce_and_gaussian_is_summed_squares():
    logits, x = torch.randn(2, 784), torch.rand(2, 784)
    p = torch.sigmoid(logits)
    bce = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)
    assert torch.allclose(reconstruction_nll(logits, x, "bernoulli"), bce, atol=1e-3)
    assert torch.allclose(reconstruction_nll(logits, x, "gaussian"), ((p - x) ** 2).sum(1))


def test_total_is_recon_plus_lam_times_kl():
    model = VAE(ModelConfig(latent_dim=2, hidden_layers=(16,)))
    x = torch.rand(8, 784)
    terms = vae_loss(model(x, torch.Generator().manual_seed(0)), x, 10.0, "bernoulli")
    assert torch.isclose(terms.total, terms.recon + 10.0 * terms.kl)
    assert torch.isclose(terms.neg_elbo, terms.recon + terms.kl)


def test_fifty_steps_lower_the_loss():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, hidden_layers=(64,)))
    x = torch.zeros(64, 28, 28)
    x[:32, :14], x[32:, 14:] = 1.0, 1.0  # two kinds of image: top half or bottom half lit
    x = x.reshape(64, 784)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(50):
        terms = vae_loss(model(x, g), x, 1.0, "bernoulli")
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        losses.append(terms.total.item())
    assert losses[-1] < 0.5 * losses[0]


def test_summed_reconstruction_matches_per_image_sums():
    g = torch.Generator().manual_seed(0)
    logits, x = torch.randn(9, 784, generator=g) * 4, torch.rand(9, 784, generator=g)
    for kind in ("bernoulli", "gaussian"):
        expected = reconstruction_nll(logits, x, kind).sum()
        assert torch.allclose(reconstruction_nll_sum(logits, x, kind), expected, rtol=1e-5)
    with pytest.raises(ValueError):
        reconstruction_nll_sum(logits, x, "laplace")


def test_bernoulli_nll_matches_torch_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(16, 784, generator=g, dtype=torch.float64) * 40).requires_grad_()
    x = torch.rand(16, 784, generator=g, dtype=torch.float64).requires_grad_()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    got = bernoulli_nll(logits, x)
    assert torch.allclose(got, expected, atol=1e-12)
    weights = torch.rand(16, 784, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((expected * weights).sum(), (logits, x)),
                    torch.autograd.grad((got * weights).sum(), (logits, x)), strict=True):  # fmt: skip
        assert torch.allclose(a, b, atol=1e-12)
    with torch.inference_mode():  # in float32, as the trainer uses it
        f32 = bernoulli_nll(logits.detach().float(), x.detach().float())
    assert (f32.double() - expected.detach()).abs().max() < 1e-5
