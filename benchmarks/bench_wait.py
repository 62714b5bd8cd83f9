"""How OpenMP's wait policy (and the thread count) changes a vaecli fit, alone and beside a second one.

    python benchmarks/bench_wait.py --data-dir DIR                # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_wait.py --data-dir DIR --steps 40 --rounds 1   # a smoke run

A student trains in one terminal and draws in another; a lab machine is shared. Each
fit here is a process of its own, as there: `vaecli.train` of the default model
(784-512-256-H, batch 128) for --steps steps of MNIST and one test evaluation, printing
its seconds. Every setting runs alone, then as two fits at once, and a spinning fit beside a
passive one, in rounds that take turns going first; each number is a median over rounds:
  spin     OMP_WAIT_POLICY unset: libgomp's threads spin a while before they sleep
  passive  OMP_WAIT_POLICY=PASSIVE: they sleep at once (the vaecli command's default)
  spin N   GOMP_SPINCOUNT=N (--spincounts): they spin N rounds (libgomp's default: 300000), then sleep
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

data_dir, steps, hidden, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
full = load_dataset("mnist", data_dir)
config = TrainConfig(epochs=1, precision=precision)
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


def fits(args: argparse.Namespace, settings: list[dict[str, str]]) -> list[float]:
    """Seconds of each fit, started at once, one per environment in `settings`."""
    command = [sys.executable, "-c", FIT, str(args.data_dir), str(args.steps), str(args.hidden), args.precision]
    children = []
    for setting in settings:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
        children.append(subprocess.Popen(command, env={**env, **setting}, stdout=subprocess.PIPE, text=True))
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        sys.exit(f"a fit failed with {settings}")
    return [float(out.strip().splitlines()[-1]) for out in outputs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(parser)
    parser.add_argument("--steps", type=int, default=200, help="training steps of every fit (default 200)")
    parser.add_argument("--hidden", type=int, default=2, help="latent size H (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, every case once per round (default 3)")
    parser.add_argument("--precision", default="fp32", help="the fits' precision: fp32, bf16 or auto (default fp32)")
    parser.add_argument("--spincounts", type=int, nargs="*", default=[], help="GOMP_SPINCOUNT values to add")
    args = parser.parse_args(argv)
    check_data_dir(parser, args)
    settings = dict(SETTINGS, **{f"spin {n}": {"GOMP_SPINCOUNT": str(n)} for n in args.spincounts})
    # each case: the settings of the fits that run at once; spin + passive is a spinning fit that a
    # second one joins with passive waiting
    cases = [(name,) * count for name in settings for count in (1, 2)] + [("spin", "passive")]
    seconds: dict[tuple[str, ...], list[list[float]]] = {case: [] for case in cases}
    for round_ in range(args.rounds):
        shift = round_ % len(cases)
        for case in cases[shift:] + cases[:shift]:
            seconds[case].append(fits(args, [settings[name] for name in case]))
    print(f"machine: {machine()}; OMP_WAIT_POLICY here: {os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(
        f"each fit: {args.steps} steps of batch 128 (784-512-256-{args.hidden}, {args.precision}), "
        f"{args.rounds} round(s)"
    )
    print()
    base = statistics.median(r[0] for r in seconds[("spin",)])
    print(f"{'fits at once':24} {'fit':>12} {'seconds':>8} {'vs spin alone':>14}")
    for case in cases:
        for i, name in enumerate(case):
            if len(set(case)) == 1 and i > 0:
                break  # fits alike: one line, the mean of them
            values = [statistics.mean(r) if len(set(case)) == 1 else r[i] for r in seconds[case]]
            value = statistics.median(values)
            print(f"{' + '.join(case):24} {name:>12} {value:>8.2f} {value / base:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
