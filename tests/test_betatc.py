"""beta-TCVAE: the KL's three parts by minibatch-stratified sampling, the objective, and its runs."""

import pytest
import torch

from vaecli.core import loss
from vaecli.core.model import VAEOutput


def sample(mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
    return mu + (0.5 * logvar).exp() * eps, eps


def test_stratified_weights_are_a_distribution_over_the_batch():
    weights = loss.stratified_log_weights(7, 1000).exp()
    assert torch.allclose(weights.sum(1), torch.ones(7), atol=1e-6)
    assert weights[0, 0] == pytest.approx(1e-3) and weights[0, 1] == pytest.approx((1000 - 6) / (1000 * 6))
    assert torch.equal(loss.stratified_log_weights(1, 10), torch.zeros(1, 1))  # a last batch of one image


def test_the_parts_add_up_to_the_sampled_kl():
    g = torch.Generator().manual_seed(1)
    mu, logvar = 2 * torch.randn(128, 5, generator=g), torch.randn(128, 5, generator=g) - 1
    z, eps = sample(mu, logvar)
    parts = loss.kl_parts(z, mu, logvar, 60_000)
    sampled = (loss.log_posterior(eps, logvar) - loss.log_prior(z)).mean()
    assert float(sum(parts)) == pytest.approx(float(sampled), abs=1e-4)


def test_one_posterior_for_every_image_holds_no_information_and_no_correlation():
    mu, logvar = torch.zeros(256, 3), torch.zeros(256, 3)
    z, _ = sample(mu, logvar)
    mi, tc, dim_kl = loss.kl_parts(z, mu, logvar, 60_000)
    assert abs(float(mi)) < 1e-5 and abs(float(tc)) < 1e-5 and abs(float(dim_kl)) < 1e-5  # q(z|x) = p(z)


def test_copied_dimensions_have_total_correlation():
    g = torch.Generator().manual_seed(2)
    mu, logvar = 2 * torch.randn(512, 2, generator=g), torch.full((512, 2), -3.0)
    copied = mu.clone()
    copied[:, 1] = copied[:, 0]  # z_1 carries what z_0 does
    apart = loss.kl_parts(*sample(mu, logvar)[:1], mu, logvar, 512).tc
    together = loss.kl_parts(*sample(copied, logvar)[:1], copied, logvar, 512).tc
    assert float(together) > float(apart) + 1.0


def test_at_tc_weight_lam_the_objective_is_the_elbo_with_a_sampled_kl():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g) - 1
    z, eps = sample(mu, logvar)
    logits, x = torch.randn(64, 20, generator=g), torch.rand(64, 20, generator=g)
    out = VAEOutput(logits, mu, logvar, z)
    terms = loss.betatc_objective(out, x, 4.0, 4.0, "bernoulli", 1000)
    sampled = (loss.log_posterior(eps, logvar) - loss.log_prior(z)).mean()
    assert float(terms.loss) == pytest.approx(float(terms.recon + 4.0 * sampled), rel=1e-5)
    assert float(terms.kl) == pytest.approx(float(loss.kl_divergence(mu, logvar).mean()))  # closed form
