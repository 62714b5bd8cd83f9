"""FactorVAE: the discriminator, its own Adam, and a fit that resumes bit for bit with both."""

from dataclasses import replace

import pytest
import torch

from tests.conftest import StopAt
from tests.test_resume import CFG
from vaecli.core import discriminator as disc
from vaecli.core.data import load_dataset
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.loop import train
from vaecli.engine.state import Stopped
from vaecli.errors import CheckpointError
from vaecli.store.checkpoint import load_state, save_state

CONFIG = replace(CFG, objective="factor", factor_gamma=20.0)


def test_shuffled_dimensions_keep_each_marginal_and_break_the_joint():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 3, generator=g)
    z[:, 1] = z[:, 0]  # two copies: totally correlated
    shuffled = disc.permute_dims(z, torch.Generator().manual_seed(1))
    for j in range(3):
        assert torch.equal(shuffled[:, j].sort().values, z[:, j].sort().values)  # the same marginal
    assert abs(float(torch.corrcoef(shuffled[:, :2].T)[0, 1])) < 0.15  # the copy no longer follows
    logits = torch.tensor([[2.0, 0.5], [1.0, 1.0]])
    assert float(disc.total_correlation(logits)) == pytest.approx(0.75)


def test_a_state_without_its_discriminator_is_one_line(tiny_mnist, tmp_path):
    data = load_dataset("mnist", tiny_mnist)
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train(CONFIG, data, device="cpu", stop=stop, observer=StopAt(stop, 1, 2))
    state = info.value.state
    state.model = {k: v for k, v in state.model.items() if not k.startswith("discriminator.")}
    save_state(tmp_path, state)
    with pytest.raises(CheckpointError) as error:
        load_state(tmp_path)
    assert "discriminator" in str(error.value) and "\n" not in str(error.value)
