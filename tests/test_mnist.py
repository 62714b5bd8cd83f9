"""Real MNIST: skipped, with the reason shown, unless VAECLI_DATA_DIR points at it."""

import json

import pytest
from typer.testing import CliRunner

from vaecli.cli import app

pytestmark = pytest.mark.slow


def test_one_epoch_at_h20_is_below_130_nats(mnist_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--hidden",
            "20",
            "--lam",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    epoch = json.loads(result.stdout.splitlines()[0])
    assert epoch["event"] == "epoch" and epoch["test_neg_elbo"] < 130
    assert epoch["test_kl"] > 5  # the latent code is in use, not collapsed to the prior
