"""What holding a data set compactly costs: its bytes, and reading a batch of floats against a training step.

    python benchmarks/bench_data.py                 # dSprites, the usual model of its papers, batch 64
    python benchmarks/bench_data.py --dataset mnist --data-dir DIR --layers 512 256 --hidden 20 --batch-size 128

Loads the data set as training does (core/data.py: dSprites' images packed 8 pixels
a byte, MNIST's one byte a pixel) and prints what it holds against float32 copies,
the process's peak resident memory, and, taking turns, the seconds of reading one
shuffled batch as floats (`images[index]`, what the training loop does per step)
and of one training step of the model (engine/steps.OneModel, in the machine's
precision), and of the step's matrix products alone (bench_train.py's limit, in
the same precision). The ratios: the share of a step the compact storage adds,
and the step against its limit (the target for dSprites' model: at most 1.3).
"""

import argparse
import resource
import statistics
import sys
import time

import torch
from bench_train import Limit
from common import machine

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.device import resolve_precision
from vaecli.engine.steps import OneModel, step_noise

CPU = torch.device("cpu")


def resident() -> int:
    """The process's resident bytes now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
    except OSError:
        return 0
    return pages * resource.getpagesize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="dsprites")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--hidden", type=int, default=10, help="latent size H (default 10)")
    parser.add_argument("--layers", type=int, nargs="*", default=[1200, 1200], help="hidden layers (default 1200 1200)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20, help="turns of both (default 20)")
    parser.add_argument("--steps", type=int, default=10, help="batches per turn (default 10)")
    args = parser.parse_args(argv)

    before = resident()
    started = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir)
    loaded = time.perf_counter() - started
    train = data.train.images
    n = len(train) + len(data.test.images)
    floats = n * train.pixels * 4
    after, peak = resident(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"machine: {machine()}, torch {torch.__version__}")
    how = data.origin or "read"
    print(f"{data.name}: {n:,} images of {train.pixels} pixels, {how} from {data.source} in {loaded:.1f} s")
    print(f"  held as {train.kind}: {data.nbytes / 2**20:,.0f} MiB (float32 copies: {floats / 2**20:,.0f} MiB)")
    print(
        f"  resident memory: {before / 2**20:,.0f} MiB before loading (torch), {after / 2**20:,.0f} MiB after, "
        f"peak {peak / 2**20:,.0f} MiB"
    )

    precision = resolve_precision("auto", CPU)
    config = TrainConfig(
        model=ModelConfig(latent_dim=args.hidden, hidden_layers=tuple(args.layers)),
        dataset=args.dataset,
        batch_size=args.batch_size,
        precision=precision,
    )
    net = OneModel(config, CPU, precision, steps_per_epoch=len(train) // args.batch_size)
    shuffle, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    order = torch.randperm(len(train), generator=shuffle)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    limit = Limit(config.model, args.batch_size, len(train), CPU, dtype)
    reads, steps, limits, t = [], [], [], 0
    for _ in range(args.rounds):
        index = [order[(t + i) * args.batch_size : (t + i + 1) * args.batch_size] for i in range(args.steps)]
        began = time.perf_counter()
        batches = [train[i] for i in index]
        reads.append((time.perf_counter() - began) / args.steps)
        began = time.perf_counter()
        for x in batches:
            x, e = step_noise(x, config, noise)
            net.step([x], [e], t)
            t += 1
        steps.append((time.perf_counter() - began) / args.steps)
        began = time.perf_counter()
        limit.run(args.steps, first=False)
        limits.append((time.perf_counter() - began) / args.steps)
    read, step, bound = statistics.median(reads), statistics.median(steps), statistics.median(limits)
    layers = "-".join(map(str, [train.pixels, *args.layers]))
    print(f"batch {args.batch_size}, MLP {layers}, H={args.hidden}, {precision}: medians of {args.rounds} turns")
    print(f"  read a shuffled batch as floats: {read * 1e3:.3f} ms")
    print(f"  one training step:               {step * 1e3:.3f} ms")
    print(f"  the step's matmuls alone:        {bound * 1e3:.3f} ms")
    print(f"  reading / step:                  {read / step:.3f}")
    print(f"  step / matmul limit:             {step / bound:.2f}")
    epoch = len(train) / args.batch_size * step
    print(f"  so one epoch of {len(train):,} images: about {epoch:.0f} s of steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
