"""Stacked training: every member ends as trainer.train ends it alone."""

from dataclasses import replace

import pytest
import torch

from tests.conftest import StopAt
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import stacked
from vaecli.core.data import load_dataset
from vaecli.core.stacked import StackedVAE, member_terms
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.loop import train, train_stacked
from vaecli.engine.observer import Observer
from vaecli.engine.state import Stopped
from vaecli.engine.steps import build_model
from vaecli.errors import ConfigError, TrainingDiverged
from vaecli.store.checkpoint import load_state, save_state

# fp32, not the default "auto": exact comparisons must not depend on this CPU's bfloat16 support
BASE = TrainConfig(
    model=ModelConfig(latent_dim=2, hidden_layers=(32, 16)), epochs=2, batch_size=24, precision="fp32"
)  # 64 images = 24 + 24 + 16


def member(h: int, lam: float, seed: int, **changes) -> TrainConfig:
    return replace(BASE, model=replace(BASE.model, latent_dim=h), lam=lam, seed=seed, **changes)


def close(a: dict, b: dict) -> bool:
    return all(a[k].shape == b[k].shape and torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


@pytest.mark.parametrize("binarize", [False, True])
def test_each_stacked_member_ends_as_it_would_alone(tiny_mnist, binarize):
    data = load_dataset("mnist", tiny_mnist)
    # different lam, seeds and latent sizes (the H = 2 members are padded to 3)
    configs = [member(h, lam, seed, binarize=binarize) for h, lam, seed in ((2, 1.0, 0), (3, 5.0, 1), (2, 40.0, 2))]
    together = train_stacked(configs, data, device="cpu")
    alone = [train(c, data, device="cpu") for c in configs]
    for i, (t, a) in enumerate(zip(together, alone, strict=True)):
        assert t.config == a.config and len(t.history) == len(a.history) == 2
        torch.testing.assert_close(t.model.state_dict(), a.model.state_dict(), rtol=1e-4, atol=1e-5)
        for rt, ra in zip(t.history, a.history, strict=True):
            assert (rt.epoch, rt.lam) == (ra.epoch, ra.lam)
            for got, want in ((rt.train, ra.train), (rt.test, ra.test)):
                assert got.recon == pytest.approx(want.recon, rel=1e-5)
                assert got.kl == pytest.approx(want.kl, rel=1e-3, abs=1e-5)
        # the comparison can fail: another member's weights (seed, lam or size mixed up) are far off
        others = [a2.model.state_dict() for j, a2 in enumerate(alone) if j != i]
        assert not any(close(t.model.state_dict(), o) for o in others)


def test_bf16_members_stack_and_end_close_to_alone(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    configs = [member(2, 1.0, 0, precision="bf16"), member(2, 5.0, 1, precision="bf16")]
    together = train_stacked(configs, data, device="cpu")
    for t, config in zip(together, configs, strict=True):
        a = train(config, data, device="cpu")
        assert t.precision == a.precision == "bf16"
        # bfloat16 keeps 8 bits of mantissa: the same steps, rounded alike but not identically
        assert t.final.test.neg_elbo == pytest.approx(a.final.test.neg_elbo, rel=1e-2)


def test_lam_is_each_members_own(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    low, high = train_stacked([member(2, 0.0, 0), member(2, 40.0, 0)], data, device="cpu")
    # the same seed: only lam tells them apart, and lam = 40 squeezes the KL
    assert high.final.train.kl < low.final.train.kl
    assert not close(low.model.state_dict(), high.model.state_dict())


def test_padded_latent_units_get_exactly_zero_gradients():
    configs = [member(2, 3.0, 0), member(5, 1.0, 1)]
    stack = StackedVAE([build_model(c) for c in configs])
    assert stack.latent_dim == 5
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 7, 784, generator=g)
    eps = torch.randn(2, 7, 5, generator=g)
    eps[0, :, 2:] = 0  # as train_stacked pads the smaller member's noise
    recon, kl = member_terms(stack(x, eps), x, "bernoulli")
    (recon + torch.tensor([3.0, 1.0]) * kl).sum().backward()
    pads = [stack.mu.weight.grad[0, :, 2:], stack.mu.bias.grad[0, :, 2:], stack.logvar.weight.grad[0, :, 2:]]
    pads += [stack.logvar.bias.grad[0, :, 2:], stack.decoder[0].weight.grad[0, 2:]]
    assert all(torch.count_nonzero(p) == 0 for p in pads)
    assert torch.count_nonzero(stack.mu.weight.grad[0, :, :2]) > 0  # the real units do learn


def test_member_is_a_copy_of_its_slice_and_draws_no_randomness():
    configs = [member(2, 1.0, 0), member(4, 1.0, 7)]
    stack = StackedVAE([build_model(c) for c in configs])
    state = torch.get_rng_state()
    for i, config in enumerate(configs):
        got = stack.member(i)
        assert got.config == config.model
        torch.testing.assert_close(got.state_dict(), build_model(config).state_dict(), rtol=0, atol=0)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "configs, message",
    [
        ([], "at least one member"),
        ([member(2, 1.0, 0), member(2, 1.0, 1, batch_size=16)], "share everything but"),
        ([member(2, 1.0, 0, compile=True), member(2, 5.0, 0, compile=True)], "cannot `compile`"),
    ],
)
def test_members_that_cannot_stack_are_refused(configs, message, tiny_mnist):
    with pytest.raises(ConfigError, match=message):
        train_stacked(configs, load_dataset("mnist", tiny_mnist), device="cpu")


# --- the engine's guarantees hold for a stack: NaN guard, stop, resume, per-epoch states ----------

THREE = [member(2, 1.0, 0), member(3, 5.0, 1), member(2, 40.0, 2)]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def poison_member(monkeypatch, member: int, from_call: int) -> None:
    """Member `member`'s recon becomes NaN from the `from_call`-th stacked step on."""
    real, calls = stacked.member_terms, []

    def poisoned(out, x, kind):
        calls.append(1)
        recon, kl = real(out, x, kind)
        if len(calls) >= from_call:
            recon = recon.clone()
            recon[member] = torch.nan
        return recon, kl

    monkeypatch.setattr(stacked, "member_terms", poisoned)


def test_a_diverged_member_is_named_and_the_others_end_as_if_it_had_not(tiny_mnist, monkeypatch):
    data = load_dataset("mnist", tiny_mnist)
    healthy = train_stacked(THREE, data, device="cpu")
    failures = []

    class Failures(Observer):
        def on_member_failed(self, member: int, error) -> None:
            failures.append((member, str(error)))

    poison_member(monkeypatch, 1, from_call=5)  # epoch 2, step 2 (3 steps an epoch)
    first, bad, last = train_stacked(THREE, data, device="cpu", observer=Failures())
    assert isinstance(bad, TrainingDiverged) and "the loss was nan at epoch 2, step 2" in str(bad)
    assert failures == [(1, str(bad))]
    for got, want in ((first, healthy[0]), (last, healthy[2])):  # bit for bit: a member's slices are its own
        assert same(got.model.state_dict(), want.model.state_dict()) and len(got.history) == 2


def test_a_lone_fit_still_raises_at_once(tiny_mnist, monkeypatch):
    data = load_dataset("mnist", tiny_mnist)
    poison_member(monkeypatch, 0, from_call=2)
    (result,) = train_stacked([THREE[0]], data, device="cpu")  # a stack of one reports, a lone fit raises
    assert isinstance(result, TrainingDiverged) and "epoch 1, step 2" in str(result)


@pytest.mark.parametrize("epoch, step", [(1, 2), (1, 3), (2, 1)])
def test_a_stopped_stack_resumed_ends_bit_for_bit_as_uninterrupted(tiny_mnist, tmp_path, epoch, step):
    data = load_dataset("mnist", tiny_mnist)
    configs = [replace(c, epochs=3) for c in THREE]
    whole = train_stacked(configs, data, device="cpu")
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train_stacked(configs, data, device="cpu", observer=StopAt(stop, epoch, step), stop=stop)
    states = info.value.states
    assert sorted(states) == [0, 1, 2] and not info.value.failed
    # through the files a stop writes: each member's state is a lone fit's resume file
    for m, state in states.items():
        save_state(tmp_path / str(m), state)
    loaded = [load_state(tmp_path / str(m)) for m in range(3)]
    assert all((s.epoch, s.step) == ((epoch, step) if step < 3 else (epoch + 1, 0)) for s in loaded)
    resumed = train_stacked(configs, data, device="cpu", resume=loaded)
    for a, b in zip(whole, resumed, strict=True):
        assert same(a.model.state_dict(), b.model.state_dict())
        assert [r.to_dict() | {"seconds": 0} for r in a.history] == [r.to_dict() | {"seconds": 0} for r in b.history]


def test_a_stacked_members_state_continues_alone(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    configs = [replace(c, epochs=2) for c in THREE[:2]]
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train_stacked(configs, data, device="cpu", observer=StopAt(stop, 1, 2), stop=stop)
    alone = train(configs[1], data, device="cpu")
    continued = train(configs[1], data, device="cpu", resume=info.value.states[1])
    # the stacked first steps round as a stack, the rest as a lone fit: close, not equal (Adam's first steps
    # amplify rounding in near-zero gradients, so single weights can differ by a few steps' worth; the more so
    # the higher the rate: 0.06 % apart at a constant 0.001, 0.11 % at the default cosine to 0.003)
    assert continued.final.test.neg_elbo == pytest.approx(alone.final.test.neg_elbo, rel=2e-3)
    assert [r.epoch for r in continued.history] == [1, 2] and continued.config == configs[1]


def test_every_members_state_is_handed_out_at_each_epoch_boundary(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    saved = []
    train_stacked([replace(c, epochs=3) for c in THREE], data, device="cpu", save_state=lambda m, s: saved.append(
        (m, s.epoch, s.step, s.config.lam)
    ))  # fmt: skip
    assert saved == [(m, e, 0, THREE[m].lam) for e in (2, 3) for m in range(3)]


def test_resume_states_must_be_at_one_point(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    configs = [replace(c, epochs=3) for c in THREE[:2]]
    states = {}
    train_stacked(configs, data, device="cpu", save_state=lambda m, s: states.setdefault((m, s.epoch), s))
    with pytest.raises(ConfigError, match="different points"):
        train_stacked(configs, data, device="cpu", resume=[states[(0, 2)], states[(1, 3)]])
