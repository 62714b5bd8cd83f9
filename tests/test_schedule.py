"""Adam's learning-rate schedule (engine/steps.learning_rate): its shapes, its config, a fit that follows it."""

import json
from dataclasses import replace

import pytest
import torch

from vaecli import TrainConfig, load_dataset, train
from vaecli.config import ModelConfig
from vaecli.engine import steps
from vaecli.engine.steps import learning_rate
from vaecli.errors import ConfigError
from vaecli.store.runs import run_name

STEPS = 47  # steps per epoch, not a divisor of anything the schedules use


def rates(config: TrainConfig) -> list[float]:
    return [learning_rate(config, t, STEPS) for t in range(config.epochs * STEPS)]


def torch_rates(scheduler_of, total: int, lr: float) -> list[float]:
    """The rate a torch.optim.lr_scheduler gives each of `total` steps, stepped once after each."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_of(optimizer)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_onecycle_is_torchs_one_cycle_policy():
    config = TrainConfig(epochs=6, lr=5e-3, lr_schedule="onecycle")
    total = config.epochs * STEPS
    one_cycle = torch.optim.lr_scheduler.OneCycleLR
    reference = torch_rates(lambda o: one_cycle(o, max_lr=5e-3, total_steps=total), total, 5e-3)
    assert rates(config) == pytest.approx(reference, rel=1e-9, abs=1e-15)


def test_cosine_warms_up_then_falls_along_half_a_cosine_to_zero_at_the_last_step():
    config = TrainConfig(epochs=6, lr=2e-3, lr_schedule="cosine")
    total = config.epochs * STEPS
    warm = round(steps.WARMUP_SHARE * total)  # 14 of 282 steps
    values = rates(config)
    assert values[:warm] == pytest.approx([2e-3 * (t + 1) / warm for t in range(warm)])
    assert values[warm - 1] == values[warm] == pytest.approx(2e-3)  # the peak: --lr
    assert all(a > b for a, b in zip(values[warm:], values[warm + 1 :], strict=False))  # falling all the way
    assert values[warm + (total - warm) // 2] == pytest.approx(1e-3, rel=1e-2)  # halfway down, half the peak
    assert 0 < values[-1] < 1e-7  # ~0 at the last step, never negative
    reference = torch_rates(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warm, eta_min=0.0), total - warm, 2e-3
    )
    assert values[warm:] == pytest.approx(reference, rel=1e-9, abs=1e-15)


def test_constant_is_lr_throughout_and_a_one_step_fit_has_a_rate():
    assert set(rates(TrainConfig(epochs=3, lr=4e-4, lr_schedule="constant"))) == {4e-4}
    for schedule in ("cosine", "onecycle"):
        rate = learning_rate(TrainConfig(epochs=1, lr_schedule=schedule), 0, 1)
        assert 0 < rate <= TrainConfig(lr_schedule=schedule).lr


def test_each_schedule_has_its_own_default_rate_and_a_given_one_wins():
    assert TrainConfig().lr_schedule == "cosine" and TrainConfig().lr == 3e-3
    assert TrainConfig(lr_schedule="constant").lr == 1e-3  # the first release's recipe, one option away
    assert TrainConfig(lr_schedule="onecycle").lr == 3e-3
    assert TrainConfig(lr=1e-4).lr == 1e-4 and TrainConfig(lr=1e-4, lr_schedule="constant").lr == 1e-4
    assert TrainConfig(lr=1) == TrainConfig(lr=1.0)
    with pytest.raises(ConfigError, match="`lr_schedule` must be one of constant, cosine, onecycle"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="`lr` must be greater than 0"):
        TrainConfig(lr=0.0)


def test_replacing_the_schedule_takes_its_rate_unless_a_rate_was_given():
    # what a notebook does to try another recipe: the default rate follows the schedule, a given one stays
    assert replace(TrainConfig(), lr_schedule="constant") == TrainConfig(lr_schedule="constant")
    assert run_name(replace(TrainConfig(), lr_schedule="constant")) == "h2-lam1-e20-s0-05a0f743"
    assert replace(TrainConfig(lr_schedule="constant"), lr_schedule="onecycle").lr == 3e-3
    assert replace(replace(TrainConfig(), epochs=3), lr_schedule="constant").lr == 1e-3
    assert replace(TrainConfig(lr=5e-3), lr_schedule="constant").lr == 5e-3
    assert replace(TrainConfig(), lr=5e-3).lr == 5e-3
    assert replace(replace(TrainConfig(), lr=5e-3), lr_schedule="onecycle").lr == 5e-3
    loaded = TrainConfig.from_json(TrainConfig().to_json())  # a stored run's rate was given by then
    assert loaded == TrainConfig() and replace(loaded, lr_schedule="constant").lr == 3e-3
    assert repr(TrainConfig()).count("lr=0.003") == 1 and TrainConfig().to_dict()["lr"] == 0.003
    with pytest.raises(ConfigError, match="`lr` must be a finite number"):
        TrainConfig(lr=float("nan"))


def test_runs_trained_before_the_schedule_keep_their_names_and_load_as_constant():
    old = TrainConfig(lr_schedule="constant")
    assert run_name(old) == "h2-lam1-e20-s0-05a0f743"  # the default run's name in every store before it
    assert run_name(TrainConfig()) == "h2-lam1-e20-s0-48abe01d"  # the default run's name since, in the docs
    assert "lr_schedule" not in old.to_dict()
    before = json.loads(old.to_json())  # what such a run's config.json holds
    assert TrainConfig.from_dict(before) == old
    assert run_name(TrainConfig()) != run_name(old)  # today's default is another recipe, so another run
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()
    assert json.loads(TrainConfig().to_json())["lr_schedule"] == "cosine"


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_fit_steps_at_the_schedules_rates(tiny_mnist, monkeypatch, schedule):
    """Adam takes each step at learning_rate(t): the fit equals one whose optimizer is told the rate by hand."""
    data = load_dataset("mnist", tiny_mnist)
    config = TrainConfig(model=ModelConfig(hidden_layers=(16,)), epochs=3, batch_size=24, precision="fp32")
    config = replace(config, lr_schedule=schedule, lr=1e-2)
    seen: list[float] = []
    real = steps.set_learning_rate

    def spy(optimizer, cfg, t, steps_per_epoch):
        real(optimizer, cfg, t, steps_per_epoch)
        seen.append(optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(steps, "set_learning_rate", spy)
    scheduled = train(config, data, device="cpu")
    monkeypatch.undo()
    per_epoch = 3  # 64 images in batches of 24
    assert seen == [learning_rate(config, t, per_epoch) for t in range(config.epochs * per_epoch)]
    constant = train(replace(config, lr_schedule="constant"), data, device="cpu")
    first, other = scheduled.model.state_dict(), constant.model.state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)  # the schedule changed the weights
