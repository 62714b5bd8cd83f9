"""Stacked training: every member ends as trainer.train ends it alone."""

from dataclasses import replace

import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.core.stacked import StackedVAE, member_terms
from vaecli.engine.loop import train, train_stacked
from vaecli.engine.steps import build_model
from vaecli.errors import ConfigError

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
        ([member(2, 1.0, 0, compile=True), member(2, 5.0, 0, compile=True)], "cannot --compile"),
    ],
)
def test_members_that_cannot_stack_are_refused(configs, message, tiny_mnist):
    with pytest.raises(ConfigError, match=message):
        train_stacked(configs, load_dataset("mnist", tiny_mnist), device="cpu")
