"""The fast trainer's options, and benchmarks/bench_train.py run on tiny data (not timed)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import invoke, one_line_error
from vaecli.cli.training import TRAINING_OPTIONS
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.core.loss import (
    bernoulli_nll,
    kl_divergence,
    kl_divergence_grad,
    reconstruction_nll,
    reconstruction_nll_sum,
)
from vaecli.core.model import VAE
from vaecli.engine.device import resolve_precision
from vaecli.engine.loop import train
from vaecli.engine.records import evaluate
from vaecli.engine.steps import batch_loss_fn, build_model, make_optimizer, train_step
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import read_config

TINY = ModelConfig(latent_dim=2, hidden_layers=(32, 16))
BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_train.py"


def load_script(name: str):
    """A benchmark script as a module; its folder goes on sys.path, as running it puts it there."""
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    path = BENCH.parent / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_bench():
    return load_script("bench_train.py")


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
    result = train(TrainConfig(model=TINY, epochs=1, batch_size=32), load_dataset("mnist", tiny_mnist), device="cpu")
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
    cfg = TrainConfig(model=TINY, epochs=3, batch_size=16, precision="bf16")
    a, b = (train(cfg, ds, device="cpu") for _ in range(2))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == torch.float32 for k in sa)
    fp32 = train(TrainConfig(model=TINY, epochs=3, batch_size=16, precision="fp32"), ds, device="cpu")
    assert not torch.equal(sa["mu.weight"], fp32.model.state_dict()["mu.weight"])
    assert abs(a.final.test.neg_elbo - fp32.final.test.neg_elbo) < 0.05 * fp32.final.test.neg_elbo


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


@pytest.mark.skipif(
    not os.environ.get("VAECLI_TEST_COMPILE"), reason="torch.compile takes minutes cold: set VAECLI_TEST_COMPILE=1"
)
def test_compiled_step_matches_eager_and_is_deterministic(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist)
    cfg = TrainConfig(model=TINY, epochs=2, batch_size=24, compile=True)  # 64 = 24 + 24 + a short 16
    a, b = (train(cfg, ds, device="cpu").model.state_dict() for _ in range(2))
    eager = train(TrainConfig(model=TINY, epochs=2, batch_size=24), ds, device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.allclose(a[k], eager[k], atol=1e-5) for k in a)


def test_summed_reconstruction_matches_per_image_sums():
    g = torch.Generator().manual_seed(0)
    logits, x = torch.randn(9, 784, generator=g) * 4, torch.rand(9, 784, generator=g)
    for kind in ("bernoulli", "gaussian"):
        expected = reconstruction_nll(logits, x, kind).sum()
        assert torch.allclose(reconstruction_nll_sum(logits, x, kind), expected, rtol=1e-5)
    with pytest.raises(ValueError):
        reconstruction_nll_sum(logits, x, "laplace")


def test_bernoulli_nll_matches_torch_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(16, 784, generator=g, dtype=torch.float64) * 40).requires_grad_()
    x = torch.rand(16, 784, generator=g, dtype=torch.float64).requires_grad_()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    got = bernoulli_nll(logits, x)
    assert torch.allclose(got, expected, atol=1e-12)
    weights = torch.rand(16, 784, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((expected * weights).sum(), (logits, x)),
                    torch.autograd.grad((got * weights).sum(), (logits, x)), strict=True):  # fmt: skip
        assert torch.allclose(a, b, atol=1e-12)
    with torch.inference_mode():  # in float32, as the trainer uses it
        f32 = bernoulli_nll(logits.detach().float(), x.detach().float())
    assert (f32.double() - expected.detach()).abs().max() < 1e-5


def test_evaluation_does_not_depend_on_its_batch_size():
    model = VAE(TINY)
    images = torch.rand(50, 784, generator=torch.Generator().manual_seed(1))
    whole = evaluate(model, images, torch.Generator().manual_seed(2))
    pieces = evaluate(model, images, torch.Generator().manual_seed(2), batch_size=16)
    # the same model and images; only the noise is drawn in other chunks
    assert whole.recon == pytest.approx(pieces.recon, rel=1e-3)
    assert whole.kl == pytest.approx(pieces.kl, rel=1e-2)


def test_no_help_imports_torch_or_matplotlib():
    """`vaecli --help` and every `vaecli <command> --help`, each in a fresh process."""
    probe = (
        "import sys\nfrom vaecli.cli import app\n"
        "try:\n    app(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    bench = load_script("bench_startup.py")
    commands = bench.subcommands()
    assert {"train", "grid", "ablate", "derive", "explore"} <= set(commands)
    for command in ["", *commands]:
        argv = [sys.executable, "-c", probe, *([command] if command else [])]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert out.strip().endswith("[]"), (command, out)


def test_startup_benchmark_lists_every_command(capsys):
    assert load_script("bench_startup.py").main(["--runs", "1"]) in (0, 1)  # 1: slow here, not broken
    out = capsys.readouterr().out
    assert "vaecli --help" in out and "vaecli train --help" in out and "vaecli derive --help" in out
    assert "torch, matplotlib or numpy imported by --help: none" in out


def test_flops_are_counted_layer_by_layer():
    bench = load_bench()
    # the classic 784-400-20 VAE: about 197 GFLOP per MNIST epoch, forward and backward
    assert round(bench.flops_per_epoch(ModelConfig(latent_dim=20, hidden_layers=(400,)), 60000) / 1e9) == 197
    shapes = bench.layer_shapes(ModelConfig(latent_dim=20))
    assert shapes[0] == (784, 512, False) and shapes[-1] == (512, 784, True) and len(shapes) == 7


def test_slice_ratios_scale_each_slice_to_an_epoch():
    bench = load_bench()
    fast, slow = bench.Clocked("fast"), bench.Clocked("slow")
    for epoch in (1, 2):
        fast.add(epoch, 0.5, 1.0)  # 2 s per epoch
        fast.add(epoch, 0.5, 1.0)
        slow.add(epoch, 0.25, 2.0)  # 8 s per epoch, with slices of other shares
        slow.add(epoch, 0.75, 6.0)
    assert bench.slice_ratios(fast, slow) == pytest.approx([0.25] * 4)
    assert fast.epoch_seconds() == [2.0, 2.0] and fast.clock == 4.0


def test_benchmark_smoke_run_prints_every_ratio(tiny_mnist, capsys):
    assert load_bench().main(["--data-dir", str(tiny_mnist), "--quick"]) == 0
    out = capsys.readouterr().out
    for row in ("baseline  DataLoader", "vaecli    vaecli.train", "limit     vaecli's matmuls"):
        assert row in out
    for line in (
        "ratio vaecli/baseline, s/epoch:",
        "ratio vaecli/limit, s/epoch:",
        "ratio vaecli/baseline, time to 106 nats:",
        "ratio vaecli --help / import torch:",
    ):
        assert line in out
    assert "--help imports torch or matplotlib: no" in out
    # the precision vaecli ran in, "auto" resolved on this machine, and the limit in the same dtype
    assert "vaecli.train, defaults (bf16)" in out or "vaecli.train, defaults (fp32)" in out
    # the machine's vector units and the step that trained: written out on the CPU, in the precision it ran in
    units = next(line for line in out.splitlines() if line.startswith("vector units: "))
    assert "torch's CPU kernels: " in units
    assert "vaecli's training step: written-out bf16" in out or "vaecli's training step: written-out fp32" in out


def test_benchmark_can_train_through_autograd_to_compare(tiny_mnist, capsys):
    args = ["--data-dir", str(tiny_mnist), "--quick", "--precision", "fp32", "--startup-runs", "1"]
    assert load_bench().main([*args, "--autograd"]) == 0
    assert "vaecli's training step: autograd\n" in capsys.readouterr().out


def test_step_benchmark_smoke_run_times_every_piece(capsys):
    args = ["--quick", "--layers", "16", "--hidden", "2", "--batch-size", "8"]
    assert load_script("bench_step.py").main(args) == 0
    out = capsys.readouterr().out
    for variant in ("autograd ", "autograd, fused Adam", "written, Optimizer.step", "written ", "written, fused heads"):
        assert f"\n{variant}" in out
    assert "saves autograd's graph (Optimizer.step both): " in out and "\nmatmuls " in out


def test_vector_units_come_from_the_cpu_flags(monkeypatch, tmp_path):
    bench = load_bench()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n")
    real = bench.Path
    monkeypatch.setattr(bench, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real(p))
    assert bench.vector_units().startswith("AVX2, AVX-512, AVX512-BF16 (torch's CPU kernels: ")
    cpuinfo.write_text("flags\t\t: fpu sse2 avx\n")
    assert bench.vector_units().startswith("none of AVX2, AVX-512, AMX")


def test_sweep_benchmark_smoke_run_times_every_way_and_checks_they_agree(tiny_mnist, capsys):
    args = ["--data-dir", str(tiny_mnist), "--quick", "--layers", "16", "--lam", "1", "5", "10"]
    assert load_script("bench_sweep.py").main(args) == 0
    out = capsys.readouterr().out
    for way in ("one by one    --stack off --jobs 1", "side by side  --stack off --jobs 2", "stacked       --stack on"):
        assert way in out
    assert "H=2, lam=5, seed 0" in out
    assert "side by side, the same weights as one by one bit for bit: yes" in out
    assert "stacked agrees with one by one (relative difference <= 0.01): yes" in out


def test_sweep_benchmark_fails_when_the_ways_disagree(tiny_mnist, capsys, monkeypatch):
    bench = load_script("bench_sweep.py")
    real = bench.ways

    def skewed(device, jobs, cluster=None):
        found = real(device, jobs, cluster)
        opts, way = found["side by side"]

        def nudged(configs, data, store):
            outcomes = way(configs, data, store)
            with torch.no_grad():
                next(outcomes[0].run.model.parameters()).add_(1e-3)
            return outcomes

        found["side by side"] = (opts, nudged)
        return found

    monkeypatch.setattr(bench, "ways", skewed)
    assert bench.main(["--data-dir", str(tiny_mnist), "--quick", "--layers", "16", "--lam", "1", "5"]) == 1
    assert "bit for bit: NO" in capsys.readouterr().out
