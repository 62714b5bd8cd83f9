"""DIP-VAE-I and -II: the covariance penalty, the objective, and its runs."""

import pytest
import torch

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error
from vaecli.config import TrainConfig
from vaecli.core import loss
from vaecli.engine.steps import stackable, written_step
from vaecli.errors import ConfigError
from vaecli.store.runs import run_name


def test_uncorrelated_unit_variance_codes_pay_nothing_and_others_pay_their_covariance():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(20_000, 3, generator=g)
    assert float(loss.dip_penalty(white, torch.zeros(20_000, 3), False, 10.0, 100.0)) < 0.05
    mu = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # Cov[mu] = [[1, 1], [1, 1]]: two off-diagonal ones
    assert float(loss.dip_penalty(mu, torch.zeros(2, 2), False, 3.0, 100.0)) == pytest.approx(3.0 * 2)
    # DIP-VAE-II adds E[sigma^2] = 1 to the diagonal: (2 - 1)^2 twice
    assert float(loss.dip_penalty(mu, torch.zeros(2, 2), True, 0.0, 5.0)) == pytest.approx(5.0 * 2)


def test_dip_options_and_names():
    config = TrainConfig(objective="dip2", dip_offdiag=5, dip_diag=5)
    assert "-dip2od5d5-" in run_name(config) and "dip2 off-diagonal 5, diagonal 5" in config.describe()
    assert "dip_diag" not in TrainConfig().to_json() and TrainConfig().digest() == "48abe01d"
    assert written_step(config, torch.device("cpu"), "fp32") is None and not stackable(config)
    with pytest.raises(ConfigError, match="add `objective` dip1 or dip2"):
        TrainConfig(dip_offdiag=1.0)
    with pytest.raises(ConfigError, match="cannot take `capacity`"):
        TrainConfig(objective="dip1", capacity=2.0)


@pytest.mark.parametrize("objective", ["dip1", "dip2"])
def test_dip_from_the_command_line(objective, tiny_mnist, tmp_path):
    out = tmp_path / objective
    args = ["--objective", objective, "--dip-offdiag", "2", "--dip-diag", "20"]
    result = invoke("train", *FAST_TRAIN_ARGS, *args, "--data-dir", tiny_mnist, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{objective} off-diagonal 2, diagonal 20" in " ".join(invoke("info", out).stdout.split())


def test_dip_weights_without_dip_are_one_line(tiny_mnist):
    one_line_error(invoke("train", "--dip-diag", "3", "--data-dir", tiny_mnist), "--dip-diag", "--objective dip1")
