"""How OpenMP's wait policy (and the thread count) changes a vaecli fit, alone and beside a second one.

    python benchmarks/bench_wait.py --data-dir DIR                # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_wait.py --data-dir DIR --steps 40 --rounds 1   # a smoke run

A student trains in one terminal and draws in another; a lab machine is shared. Each
fit here is a process of its own, as there: `vaecli.train` of the default model
(784-512-256-H, batch 128) for --steps steps of MNIST and one test evaluation, printing
its seconds. Every setting runs alone, then as two fits at once, in rounds that take
turns going first; each number is a median over rounds:
  spin     OMP_WAIT_POLICY unset: libgomp's threads spin a while before they sleep
  passive  OMP_WAIT_POLICY=PASSIVE: they sleep at once
  1 thread OMP_NUM_THREADS=1 (spin does not matter without a team)
The ratio that matters: each setting's seconds over spin-alone's.
"""

import argparse
import os
import statistics
import subprocess
import sys

from common import add_data_dir, check_data_dir, machine

FIT = """
import sys, time
from dataclasses import replace
import torch
from vaecli import TrainConfig, load_dataset, train
from vaecli.core.data import Dataset, Split

data_dir, steps, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
full = load_dataset("mnist", data_dir)
config = TrainConfig(epochs=1, precision="fp32")
config = replace(config, model=replace(config.model, latent_dim=hidden))
n = steps * config.batch_size
data = Dataset(full.name, Split(full.train.images[:n], full.train.labels[:n]),
               Split(full.test.images[:1000], full.test.labels[:1000]), full.image_shape, full.source)
started = time.perf_counter()
train(config, data, device="cpu")
print(time.perf_counter() - started)
"""

SETTINGS = {
    "spin": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}


def fits(args: argparse.Namespace, setting: dict[str, str], count: int) -> list[float]:
    """Seconds of each of `count` fits started at once with `setting`'s environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(setting)
    command = [sys.executable, "-c", FIT, str(args.data_dir), str(args.steps), str(args.hidden)]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        sys.exit(f"a fit failed with {setting}")
    return [float(out.strip().splitlines()[-1]) for out in outputs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps of every fit (default 200)")
    parser.add_argument("--hidden", type=int, default=2, help="latent size H (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, every setting once per round (default 3)")
    args = parser.parse_args(argv)
    check_data_dir(parser, args)
    cases = [(name, count) for name in SETTINGS for count in (1, 2)]
    seconds: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for round_ in range(args.rounds):
        shift = round_ % len(cases)
        for name, count in cases[shift:] + cases[:shift]:
            seconds[(name, count)].append(statistics.mean(fits(args, SETTINGS[name], count)))
    print(f"machine: {machine()}; OMP_WAIT_POLICY here: {os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"each fit: {args.steps} steps of batch 128 (784-512-256-{args.hidden}, fp32), {args.rounds} round(s)")
    print()
    base = statistics.median(seconds[("spin", 1)])
    print(f"{'setting':10} {'fits at once':>12} {'seconds':>8} {'vs spin alone':>14}")
    for name, count in cases:
        value = statistics.median(seconds[(name, count)])
        print(f"{name:10} {count:>12} {value:>8.2f} {value / base:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
