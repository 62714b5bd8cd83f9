"""DIP-VAE-I and -II: the covariance penalty, the objective, and its runs."""

import pytest
import torch

from vaecli.core import loss


def test_uncorrelated_unit_variance_codes_pay_nothing_and_others_pay_their_covariance():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(20_000, 3, generator=g)
    assert float(loss.dip_penalty(white, torch.zeros(20_000, 3), False, 10.0, 100.0)) < 0.05
    mu = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # Cov[mu] = [[1, 1], [1, 1]]: two off-diagonal ones
    assert float(loss.dip_penalty(mu, torch.zeros(2, 2), False, 3.0, 100.0)) == pytest.approx(3.0 * 2)
    # DIP-VAE-II adds E[sigma^2] = 1 to the diagonal: (2 - 1)^2 twice
    assert float(loss.dip_penalty(mu, torch.zeros(2, 2), True, 0.0, 5.0)) == pytest.approx(5.0 * 2)
