"""One sweep trained member by member and side by side in threads (`vaecli ablate --jobs`), taking turns.

    python benchmarks/bench_jobs.py --data-dir /path/to/data     # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_jobs.py --data-dir DIR --quick       # a smoke run of seconds

The sweep (default: lam 1 5 10 40 at H = 2, layers 512 256, batch 128, 1 epoch)
trains in rounds, each variant once per round, into a fresh run store each time,
through runs.train_in_threads as `vaecli ablate` calls it:
  one by one    --jobs 1: the members in turn, each on all of the CPU's threads
  side by side  --jobs N: N members at once, each on one thread
The machine is noisy, so the variants alternate which goes first in a round, and
the ratio is the median of the per-round ratios. Both must end every member with
the same weights, bit for bit.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.runs import Outcome, train_in_threads


def digest(outcomes: list[Outcome]) -> list[bytes]:
    """Every member's weights, as bytes, to compare the variants bit for bit."""
    return [b"".join(t.numpy().tobytes() for t in o.run.model.state_dict().values()) for o in outcomes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("VAECLI_DATA_DIR"), help="holds MNIST/raw")
    parser.add_argument("--lam", type=float, nargs="+", default=[1.0, 5.0, 10.0, 40.0], help="the members' lam")
    parser.add_argument("--hidden", type=int, nargs="+", default=[2], help="the members' latent sizes (default 2)")
    parser.add_argument("--layers", type=int, nargs="+", default=[512, 256], help="hidden layers (default 512 256)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every member (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="members at once in the side-by-side variant (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each variant once per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    if args.data_dir is None:
        parser.error("give --data-dir (a folder holding MNIST/raw) or set VAECLI_DATA_DIR")

    base = TrainConfig(model=ModelConfig(hidden_layers=tuple(args.layers)), epochs=args.epochs)
    configs = [replace(base, model=replace(base.model, latent_dim=h), lam=lam) for h in args.hidden for lam in args.lam]
    data = vaecli.load_dataset("mnist", args.data_dir)
    variants = {"one by one": 1, "side by side": args.jobs}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    weights: dict[str, list[bytes]] = {}
    for round_ in range(args.rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))  # neither always goes first
        for name in order:
            with tempfile.TemporaryDirectory() as store:
                start = time.perf_counter()
                outcomes = train_in_threads(configs, data, jobs=variants[name], store=Path(store), device="cpu")
                seconds[name].append(time.perf_counter() - start)
                weights[name] = digest(outcomes)

    layers = "-".join(map(str, (784, *args.layers)))
    print(f"vaecli {vaecli.__version__} side-by-side benchmark, torch {torch.__version__}, cpu")
    print(f"machine: {os.cpu_count()} logical CPUs, {torch.get_num_threads()} PyTorch threads")
    print(
        f"MNIST {len(data.train.images)} train images, {len(configs)} members (H {' '.join(map(str, args.hidden))}; "
        f"lam {' '.join(f'{v:g}' for v in args.lam)}), model {layers}-H (mirrored), {args.epochs} epoch(s) each, "
        f"{args.rounds} round(s), each member trained (a test evaluation every epoch) and saved as `vaecli ablate` does"
    )
    print()
    for name, jobs in variants.items():
        rounds = " ".join(f"{s:.1f}" for s in seconds[name])
        print(f"{name:13} --jobs {jobs}: seconds per round {rounds}")
    ratios = [a / b for a, b in zip(seconds["one by one"], seconds["side by side"], strict=True)]
    same = weights["one by one"] == weights["side by side"]
    print(f"same weights, bit for bit: {'yes' if same else 'NO'}")
    print(
        f"ratio one by one / side by side: {statistics.median(ratios):.3f} (median of {len(ratios)} rounds; "
        f"range {min(ratios):.2f} to {max(ratios):.2f}): side by side is {statistics.median(ratios):.2f}x the speed"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
