"""The benchmark scripts (benchmarks/bench_train.py, bench_step.py, bench_sweep.py) run on tiny data, not timed."""

import pytest
import torch

from tests.conftest import load_script
from vaecli.config import ModelConfig


def load_bench():
    return load_script("bench_train.py")


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
