"""What each piece of the written-out training step saves, variants side by side on the same batches.

    python benchmarks/bench_step.py                       # fp32, the default model at H = 20, batch 128
    python benchmarks/bench_step.py --precision bf16
    python benchmarks/bench_step.py --compile             # also torch.compile of the written-out step
    python benchmarks/bench_step.py --quick               # a smoke run of a few seconds

Variants, each with its own model and Adam from the same initial weights:
  autograd                 autograd's graph and Optimizer.step: the fp32 step before it was written out
  autograd, fused Adam     autograd's graph, then the fused Adam kernel called directly
  written, Optimizer.step  the written-out forward and backward, then Optimizer.step
  written                  the written-out step, as vaecli trains (engine/written_step.py)
  written, fused heads     mu and logvar as one (2H, hidden) layer (float32's rounding then differs)
  compiled                 the written-out step's forward and backward through torch.compile
                           (--compile; needs a C++ compiler), Adam eager
  matmuls                  the step's matrix products alone (bench_train.py's limit)
The machine is noisy (shared cores), so the variants take turns, in a rotating order,
a few steps each; every ratio is the median of the per-round ratios.
"""

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
from bench_train import Limit, vector_units
from common import machine

import vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.engine.steps import autograd_step, batch_loss_fn, build_model, make_optimizer
from vaecli.engine.written_step import Bf16Step, Fp32Step, WrittenStep, fused_adam

CPU = torch.device("cpu")
Step = Callable[[torch.Tensor, torch.Tensor, int], object]


def autograd_fused_adam(model: torch.nn.Module, config: TrainConfig, precision: str) -> Step:
    """Autograd's forward and backward, then fused_adam instead of Optimizer.step."""
    optimizer = make_optimizer(model, config, CPU)
    batch_loss, params = batch_loss_fn(model, config, CPU, precision), list(model.parameters())

    def step(x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        loss_value, _ = batch_loss(x, eps)
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        fused_adam(optimizer, params, [p.grad for p in params if p.grad is not None])
        return loss_value.detach()

    return step


def written(kind: type[WrittenStep], **overrides: object) -> Callable[[torch.nn.Module, TrainConfig, str], Step]:
    """A written-out step of `kind`, with class attributes or methods replaced."""
    variant = type(f"{kind.__name__}Variant", (kind,), overrides) if overrides else kind

    def make(model: torch.nn.Module, config: TrainConfig, precision: str) -> Step:
        return variant(model, make_optimizer(model, config, CPU), config, lambda t: (config.lam, 0.0))

    return make


def compiled(kind: type[WrittenStep]) -> Callable[[torch.nn.Module, TrainConfig, str], Step]:
    """The written-out step with its forward and backward compiled (inductor: C++ kernels); Adam stays eager,
    as torch.compile cannot trace the fused kernel's in-place update of the parameters."""

    def make(model: torch.nn.Module, config: TrainConfig, precision: str) -> Step:
        step = written(kind)(model, config, precision)
        step.gradients = torch.compile(step.gradients, dynamic=False)  # type: ignore[method-assign]
        return step

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--hidden", type=int, default=20, help="latent size H (default 20)")
    parser.add_argument("--layers", type=int, nargs="*", default=[512, 256], help="hidden layers (default 512 256)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=30, help="turns of every variant (default 30)")
    parser.add_argument("--steps", type=int, default=20, help="steps per variant and turn (default 20)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile of the written-out step")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 3, 3
    precision, kind = args.precision, Fp32Step if args.precision == "fp32" else Bf16Step
    model = ModelConfig(latent_dim=args.hidden, hidden_layers=tuple(args.layers))
    config = TrainConfig(model=model, batch_size=args.batch_size, precision=precision)
    makers = {
        "autograd": lambda m, c, p: autograd_step(m, make_optimizer(m, c, CPU), c, CPU, p),
        "autograd, fused Adam": autograd_fused_adam,
        "written, Optimizer.step": written(kind, adam=lambda self: self.optimizer.step()),
        "written": written(kind),
        f"written, {'apart' if kind.fused_head else 'fused'} heads": written(kind, fused_head=not kind.fused_head),
    }
    if args.compile:
        makers["compiled"] = compiled(kind)
    gen = torch.Generator().manual_seed(0)
    size = args.batch_size
    batches = [
        (torch.rand(size, model.input_dim, generator=gen), torch.randn(size, args.hidden, generator=gen))
        for _ in range(8)
    ]
    variants: dict[str, Step] = {}
    setup: dict[str, float] = {}
    for name, make in makers.items():
        start = time.perf_counter()
        variants[name] = step = make(build_model(config), config, precision)
        for t in range(3):  # Adam's state, the allocator's pools, and the compilation
            step(*batches[t], t)
        setup[name] = time.perf_counter() - start
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    limit = Limit(model, args.batch_size, args.batch_size * 1000, CPU, dtype)
    limit.run(2, first=True)
    names = [*variants, "matmuls"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    t = 3
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # a rotating order
            start = time.perf_counter()
            if name == "matmuls":
                limit.run(args.steps, first=True)
            else:
                for i in range(args.steps):
                    variants[name](*batches[(t + i) % len(batches)], t + i)
            seconds[name].append((time.perf_counter() - start) / args.steps)
        t += args.steps

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(seconds[a], seconds[b], strict=True))

    layers = "-".join(map(str, (model.input_dim, *model.hidden_layers, model.latent_dim)))
    print(f"vaecli {vaecli.__version__} step benchmark, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"machine: {machine()}")
    print(f"vector units: {vector_units()}")
    print(
        f"{precision}, model {layers} (mirrored), batch {args.batch_size}; {args.rounds} rounds of {args.steps} steps "
        "per variant, taking turns"
    )
    print()
    print(f"{'variant':26} {'ms/step':>8} {'/ autograd':>11} {'/ written':>10} {'/ matmuls':>10} {'set-up s':>9}")
    for name in names:
        ms = 1e3 * statistics.median(seconds[name])
        cells = [f"{ratio(name, other):.3f}" for other in ("autograd", "written", "matmuls")]
        ready = f"{setup[name]:.1f}" if name in setup else ""
        print(f"{name:26} {ms:>8.2f} {cells[0]:>11} {cells[1]:>10} {cells[2]:>10} {ready:>9}")
    saved = {
        "autograd's graph (Optimizer.step both)": ("written, Optimizer.step", "autograd"),
        "Optimizer.step's Python (autograd both)": ("autograd, fused Adam", "autograd"),
        "Optimizer.step's Python (written both)": ("written", "written, Optimizer.step"),
        "both: the written-out step": ("written", "autograd"),
    }
    print()
    for what, (new, old) in saved.items():
        r = ratio(new, old)
        print(f"saves {what}: {100 * (1 - r):.1f} % of a step (ratio {r:.3f})")
    return 0 if all(math.isfinite(x) for v in seconds.values() for x in v) else 1


if __name__ == "__main__":
    sys.exit(main())
