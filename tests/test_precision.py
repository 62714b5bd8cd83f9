"""Training precision (fp32, bf16, auto) and torch.compile: in the config, on the command line, what they train."""

import os

import pytest
import torch

from tests.conftest import invoke, one_line_error
from vaecli.cli.training import TRAINING_OPTIONS
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.device import resolve_precision
from vaecli.engine.loop import train
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import read_config

SMALL_MODEL = ModelConfig(latent_dim=2, hidden_layers=(32, 16))


def test_precision_and_compile_are_part_of_the_config():
    base = TrainConfig()
    assert base.precision == "auto" and base.compile is False
    variants = (base, TrainConfig(precision="fp32"), TrainConfig(precision="bf16"), TrainConfig(compile=True))
    assert len({c.digest() for c in variants}) == 4
    back = TrainConfig.from_json(TrainConfig(precision="bf16", compile=True).to_json())
    assert back.precision == "bf16" and back.compile is True
    with pytest.raises(ConfigError, match="`precision` must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="`compile` must be true or false"):
        TrainConfig(compile="yes")


def test_old_config_json_without_the_new_keys_still_loads():
    data = TrainConfig().to_dict()
    del data["precision"], data["compile"]
    # runs from before --precision were trained in fp32, whatever the default is now
    assert TrainConfig.from_dict(data) == TrainConfig(precision="fp32")


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, tiny_mnist):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    # the run records the arithmetic it used: auto resolved on this machine's CPU
    result = train(
        TrainConfig(model=SMALL_MODEL, epochs=1, batch_size=32), load_dataset("mnist", tiny_mnist), device="cpu"
    )
    assert result.config.precision == "auto" and result.precision == "fp32"


def test_cli_passes_precision_and_compile_into_the_config(tiny_mnist, tmp_path):
    assert {"precision", "compile"} <= set(TRAINING_OPTIONS)
    out = tmp_path / "run"
    result = invoke("train", "-H", "2", "--layers", "32", "16", "--epochs", "1", "--batch-size", "16",
                    "--precision", "bf16", "--data-dir", tiny_mnist, "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_config(out).precision == "bf16"
    one_line_error(invoke("train", "--precision", "fp8", "--data-dir", tiny_mnist), "--precision")


def test_bf16_trains_deterministically_and_close_to_fp32(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist)
    cfg = TrainConfig(model=SMALL_MODEL, epochs=3, batch_size=16, precision="bf16")
    a, b = (train(cfg, ds, device="cpu") for _ in range(2))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == torch.float32 for k in sa)
    fp32 = train(TrainConfig(model=SMALL_MODEL, epochs=3, batch_size=16, precision="fp32"), ds, device="cpu")
    assert not torch.equal(sa["mu.weight"], fp32.model.state_dict()["mu.weight"])
    assert abs(a.final.test.neg_elbo - fp32.final.test.neg_elbo) < 0.05 * fp32.final.test.neg_elbo


@pytest.mark.skipif(
    not os.environ.get("VAECLI_TEST_COMPILE"), reason="torch.compile takes minutes cold: set VAECLI_TEST_COMPILE=1"
)
def test_compiled_step_matches_eager_and_is_deterministic(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist)
    cfg = TrainConfig(model=SMALL_MODEL, epochs=2, batch_size=24, compile=True)  # 64 = 24 + 24 + a short 16
    a, b = (train(cfg, ds, device="cpu").model.state_dict() for _ in range(2))
    eager = train(TrainConfig(model=SMALL_MODEL, epochs=2, batch_size=24), ds, device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.allclose(a[k], eager[k], atol=1e-5) for k in a)
