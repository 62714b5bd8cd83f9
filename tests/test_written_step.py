"""The written-out training steps (engine/written_step.py) against autograd: gradients, weights, where they run."""

from dataclasses import replace

import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import kernels
from vaecli.core.data import load_dataset
from vaecli.core.loss import kl_divergence, kl_divergence_grad, kl_divergence_per_dim
from vaecli.engine import steps
from vaecli.engine.loop import train
from vaecli.engine.steps import autograd_step, batch_loss_fn, build_model, make_optimizer, schedule, train_step
from vaecli.engine.written_step import Bf16Step, Fp32Step, WrittenStep

CPU = torch.device("cpu")
STEPS_PER_EPOCH = 4  # what the schedules see: a warm-up or a capacity ramp of 2 epochs is 8 steps
# (hidden layers, latent size, batch size): no hidden layer, one, three; 1/B not a power of two; B = 1
SHAPES = [((), 4, 12), ((24,), 1, 16), ((32, 16), 3, 33), ((40, 24, 8), 7, 1), ((20, 20), 2, 9)]
OBJECTIVES = {
    "elbo": {"lam": 3.0},
    "warm-up": {"kl_warmup": 2, "lam": 5.0},  # at step 3 of 8 the KL weight is 5 * 3/8
    "free bits": {"lam": 2.0},  # free_bits set from the model: half the dimensions below it
    "capacity below": {"capacity": 50.0, "capacity_epochs": 1, "lam": 7.0},  # KL < C(t): sign -1
    "capacity above": {"capacity": 1e-3, "lam": 7.0},  # KL > C: sign +1
    "iwae": {"objective": "iwae", "k": 5},
}
T = 3  # the global step whose gradients are compared: mid-way through every ramp


def config_for(objective: str, hidden: tuple[int, ...], latent: int, recon: str, precision: str) -> TrainConfig:
    options = dict(OBJECTIVES[objective])
    base = TrainConfig(
        model=ModelConfig(latent_dim=latent, hidden_layers=hidden, recon=recon),
        lam=options.pop("lam", 1.0),
        precision=precision,
        epochs=2,
    )
    return replace(base, **options)


def batch(config: TrainConfig, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] and their noise: (B, D), eps (B, H) or (k, B, H)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (size, config.model.latent_dim)
    if config.objective == "iwae":
        shape = (config.k, *shape)
    return torch.rand(size, config.model.input_dim, generator=gen), torch.randn(shape, generator=gen)


def with_free_bits(config: TrainConfig, x: torch.Tensor) -> TrainConfig:
    """F between the smallest and largest batch-mean KL of a dimension at the initial weights, so that
    some dimensions are held (their KL gradient zero) and others not."""
    with torch.no_grad():
        per_dim = kl_divergence_per_dim(*build_model(config).encode(x)).mean(0)
    low, high = float(per_dim.min()), float(per_dim.max())
    return replace(config, free_bits=(low + high) / 2) if high > low else replace(config, free_bits=high / 2)


def autograd_grads(config: TrainConfig, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of step T's objective by autograd (under autocast in bf16), at the initial weights."""
    model = build_model(config)
    lam, capacity = schedule(config, T, STEPS_PER_EPOCH)
    objective, _ = batch_loss_fn(model, config, CPU, config.precision)(x, eps, lam, capacity)
    objective.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def written_grads(config: TrainConfig, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients the written-out step writes at step T, at the initial weights (read before Adam's update
    moves the weights, which does not touch them)."""
    model = build_model(config)
    step = train_step(model, make_optimizer(model, config, CPU), config, CPU, config.precision, STEPS_PER_EPOCH)
    assert isinstance(step, WrittenStep)
    step(x, eps, T)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        difference = float((got[name] - want[name]).abs().max())
        assert torch.equal(got[name], want[name]), f"{name}: off by up to {difference:g}"


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("recon", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(("hidden", "latent", "size"), SHAPES)
def test_fp32_gradients_are_autograds_bit_for_bit(objective, recon, hidden, latent, size):
    """Every product in autograd's order and every sum as autograd sums it, so equal to the last bit,
    not only within float32 rounding: then a fit ends where autograd's would."""
    config = config_for(objective, hidden, latent, recon, "fp32")
    x, eps = batch(config, size, seed=size + latent)
    if objective == "free bits":
        config = with_free_bits(config, x)
    assert_same(written_grads(config, x, eps), autograd_grads(config, x, eps))


@pytest.mark.parametrize("objective", ["elbo", "capacity below", "iwae"])
@pytest.mark.parametrize("recon", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(("hidden", "latent", "size"), [((256, 128), 3, 33), ((512, 256), 20, 128)])
def test_fp32_gradients_of_wide_layers_are_autograds_within_float32_rounding(objective, recon, hidden, latent, size):
    """Layers at least kernels.WIDE wide multiply through oneDNN, whose sums round otherwise than MKL's:
    every gradient within 1e-4 of its largest entry from autograd's (2e-5 seen, through k = 5 samples)."""
    if kernels.onednn_linear() is None:
        pytest.skip("this torch has no oneDNN")
    config = config_for(objective, hidden, latent, recon, "fp32")
    x, eps = batch(config, size, seed=size + latent)
    model = build_model(config)
    step = train_step(model, make_optimizer(model, config, CPU), config, CPU, "fp32", STEPS_PER_EPOCH)
    assert isinstance(step, WrittenStep)
    through = [layer.onednn is not None for layer in (*step.encoder, *step.heads, *step.decoder)]
    assert through == [True] + [hidden[1] >= kernels.WIDE] + [False] * 3 + [hidden[1] >= kernels.WIDE, True]
    got, want = written_grads(config, x, eps), autograd_grads(config, x, eps)
    for name, value in want.items():
        scale = float(value.abs().max())
        assert float((got[name] - value).abs().max()) <= 1e-4 * scale, name  # a slip would be ~1


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(("hidden", "latent", "size"), [SHAPES[0], SHAPES[2]])
def test_bf16_gradients_are_autocasts_bit_for_bit(objective, hidden, latent, size):
    """The bf16 step's every objective: the gradients autograd computes under autocast, rounding for rounding."""
    config = config_for(objective, hidden, latent, "bernoulli", "bf16")
    x, eps = batch(config, size, seed=size)
    if objective == "free bits":
        config = with_free_bits(config, x)
    assert_same(written_grads(config, x, eps), autograd_grads(config, x, eps))


def test_free_bits_stop_the_kl_gradient_of_the_held_dimensions_only():
    """With lam large, a held dimension's mu gradient is the reconstruction's alone: the same as with lam = 0."""
    config = config_for("free bits", (16,), 4, "bernoulli", "fp32")
    x, eps = batch(config, 16, seed=0)
    config = with_free_bits(replace(config, lam=100.0), x)
    with torch.no_grad():
        held = kl_divergence_per_dim(*build_model(config).encode(x)).mean(0) <= config.free_bits
    assert 0 < int(held.sum()) < len(held)
    strong, none = written_grads(config, x, eps), written_grads(replace(config, lam=0.0), x, eps)
    for name in ("mu.bias", "logvar.bias"):
        assert torch.equal(strong[name][held], none[name][held])
        assert not torch.allclose(strong[name][~held], none[name][~held])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_few_steps_end_with_autograd_and_adams_weights(objective, precision):
    """Written-out steps against autograd + Optimizer.step over batches of two sizes and a moving schedule:
    the same weights and the same (loss, recon, KL, objective) values after every step."""
    config = config_for(objective, (32, 16), 3, "gaussian" if objective == "elbo" else "bernoulli", precision)
    if objective == "free bits":
        config = with_free_bits(config, batch(config, 16, seed=1)[0])
    weights, values = [], []
    for make in (train_step, autograd_step):
        model = build_model(config)
        step = make(model, make_optimizer(model, config, CPU), config, CPU, precision, STEPS_PER_EPOCH)
        assert isinstance(step, WrittenStep) == (make is train_step)
        results = []
        for t, size in enumerate((16, 16, 16, 12, 12, 16)):
            results += step(*batch(config, size, seed=t), t)
        weights.append(model.state_dict())
        values.append(results)
    assert_same(*weights)
    assert all(torch.equal(a, b) for a, b in zip(*values, strict=True))


def test_train_step_writes_the_step_out_on_the_cpu_only_and_not_compiled():
    config = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(8,)))
    model = build_model(config)
    optimizer = make_optimizer(model, config, CPU)
    assert type(train_step(model, optimizer, config, CPU, "fp32")) is Fp32Step
    assert type(train_step(model, optimizer, config, CPU, "bf16")) is Bf16Step
    # neither call below touches the device or compiles: the compiled step compiles at its first batch
    compiled = train_step(model, optimizer, replace(config, compile=True), CPU, "fp32")
    on_gpu = train_step(model, optimizer, config, torch.device("cuda"), "fp32")
    assert not isinstance(compiled, WrittenStep) and not isinstance(on_gpu, WrittenStep)
    names = {
        (c.compile, d, p): steps.step_name(c, torch.device(d), p)
        for c in (config, replace(config, compile=True))
        for d in ("cpu", "cuda", "mps")
        for p in ("fp32", "bf16")
    }
    assert names[(False, "cpu", "fp32")] == "written-out fp32" and names[(False, "cpu", "bf16")] == "written-out bf16"
    assert {n for (c, d, _), n in names.items() if c or d != "cpu"} == {"autograd", "autograd, compiled"}
    assert names[(True, "cpu", "fp32")] == "autograd, compiled" and names[(False, "cuda", "fp32")] == "autograd"


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_an_fp32_fit_is_the_autograd_fit_bit_for_bit(tiny_mnist, monkeypatch, objective):
    """Through the loop (shuffling, noise, a short last batch, the epoch's sums): the same weights and history."""
    data = load_dataset("mnist", tiny_mnist)
    options = {"objective": "iwae", "k": 3} if objective == "iwae" else {"kl_warmup": 1}
    config = TrainConfig(model=ModelConfig(hidden_layers=(16,)), epochs=2, batch_size=24, precision="fp32", **options)
    written = train(config, data, device="cpu")
    monkeypatch.setattr(steps, "written_step", lambda *args: None)
    autograd = train(config, data, device="cpu")
    assert_same(written.model.state_dict(), autograd.model.state_dict())
    assert len(written.history) == 2
    for a, b in zip(written.history, autograd.history, strict=True):
        assert (a.train_objective, a.train, a.test) == (b.train_objective, b.train, b.test)


@pytest.mark.parametrize("lam", [1.0, 3.0, 5.0, 40.0])
@pytest.mark.parametrize("batch", [128, 96, 12])
def test_written_out_kl_gradient_is_autograds_to_the_bit(lam, batch):
    gen = torch.Generator().manual_seed(batch)
    mu = torch.randn(batch, 20, generator=gen).requires_grad_()
    logvar = (2 * torch.randn(batch, 20, generator=gen)).requires_grad_()
    (lam * kl_divergence(mu, logvar).mean()).backward()
    d_mu, d_logvar = kl_divergence_grad(mu.detach(), logvar.detach(), lam * (1.0 / batch))
    assert torch.equal(d_mu, mu.grad) and torch.equal(d_logvar, logvar.grad)


@pytest.mark.parametrize(("recon", "hidden"), [("bernoulli", (32, 16)), ("gaussian", (24,)), ("bernoulli", ())])
def test_written_out_bf16_step_is_autocast_bit_for_bit(recon, hidden):
    """Bf16Step (the CPU's bf16 step) against autograd under autocast + Optimizer.step: the same weights after
    steps of two batch sizes (1/B not a power of two in the second), so the same fits."""
    cfg = TrainConfig(model=ModelConfig(latent_dim=3, hidden_layers=hidden, recon=recon), lam=3.0, precision="bf16")
    cpu, models = torch.device("cpu"), []
    for written_out in (True, False):
        model = build_model(cfg)
        optimizer = make_optimizer(model, cfg, cpu)
        if written_out:
            step = train_step(model, optimizer, cfg, cpu, "bf16")
            assert type(step).__name__ == "Bf16Step"
        else:
            batch_loss = batch_loss_fn(model, cfg, cpu, "bf16")

            def step(x, eps, batch_loss=batch_loss, optimizer=optimizer):
                loss, means = batch_loss(x, eps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                return loss.detach(), torch.cat((means, loss.detach().view(1)))

        gen, results = torch.Generator().manual_seed(0), []
        for batch in (16, 16, 16, 12, 12):
            x, eps = torch.rand(batch, 784, generator=gen), torch.randn(batch, 3, generator=gen)
            results += step(x, eps)
        models.append((model.state_dict(), results))
    (a, results_a), (b, results_b) = models
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(u, v) for u, v in zip(results_a, results_b, strict=True))
