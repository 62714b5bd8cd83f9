"""One sweep trained in each of the ways `vaecli ablate` can train it, taking turns.

    python benchmarks/bench_sweep.py --data-dir /path/to/data     # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_sweep.py --data-dir DIR --quick       # a smoke run of seconds

The sweep (default: lam 1 5 10 40 at H = 2, layers 512 256, batch 128, 1 epoch)
trains in rounds, each way once per round, into a fresh run store each time,
through the functions `vaecli ablate` calls and, as there, from the main thread:
  one by one    --stack off --jobs 1: the members in turn, each on all of the CPU's threads
  side by side  --stack off --jobs N: N members at once, each on one CPU thread (CPU only)
  stacked       --stack on: all members as one batched model
  cluster       --cluster ADDRESS: each member a Ray task (only with --cluster; start a head node first,
                e.g. ray start --head --num-cpus 2 --port 6380, and give --cluster 127.0.0.1:6380)
Every member is trained (a test evaluation every epoch) and saved. The machine is
noisy, so the ways take turns going first, and each speed is the median of the
per-round ratios to one by one. Side by side must end every member with the same
weights as one by one, bit for bit; stacked with the same test -ELBO up to AGREE.
(Each way runs in the main thread: a two-thread OpenMP team in another thread ran
about half as fast once the main thread had one, which skewed an earlier version
of this script that ran the ways in threads of their own.)
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from common import add_sweep_options, check_data_dir, describe_sweep, machine, sweep_configs, sync

import vaecli
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset
from vaecli.engine.device import resolve_device
from vaecli.store.runs import Outcome
from vaecli.studies.executors import Executor, FitContext, OneByOne, SideBySide, Stacked

# the most relative difference in a member's final test -ELBO that still counts as the same result. Training
# amplifies rounding where the batched products add in another order than a member's own: in float32 on a CPU,
# after 3 MNIST epochs, that once moved lam = 1's -ELBO by 0.6 nats (0.4 %), and a member trained alone twice,
# once from weights nudged by one ulp, moved by 0.34 (in bf16 on a Zen 4 CPU the ways differed by under 1e-12)
AGREE = 0.01

Way = Callable[[Sequence[TrainConfig], Dataset, Path], list[Outcome]]


def executor_way(executor: Executor, device: str) -> Way:
    """How `executor` trains the members into a store, as `vaecli ablate` calls it."""

    def way(configs: Sequence[TrainConfig], data: Dataset, store: Path) -> list[Outcome]:
        fitted = executor.fit(dict(enumerate(configs)), FitContext(data, store=store, device=device))
        outcomes = [fitted[i] for i in range(len(configs))]
        if not all(isinstance(o, Outcome) for o in outcomes):
            sys.exit(f"a member failed: {next(o for o in outcomes if not isinstance(o, Outcome))}")
        return outcomes  # type: ignore[return-value]

    return way


def ways(device: torch.device, jobs: int, cluster: str | None = None) -> dict[str, tuple[str, Way]]:
    """name -> (the ablate options it stands for, how it trains the members into a store)."""
    found: dict[str, tuple[str, Way]] = {"one by one": ("--stack off --jobs 1", executor_way(OneByOne(), str(device)))}
    if device.type == "cpu":
        found["side by side"] = (f"--stack off --jobs {jobs}", executor_way(SideBySide(jobs), "cpu"))
    found["stacked"] = ("--stack on", executor_way(Stacked(), str(device)))
    if cluster is not None:
        from vaecli.studies.cluster import Cluster

        found["cluster"] = (f"--cluster {cluster}", executor_way(Cluster(cluster), str(device)))
    return found


def digest(outcome: Outcome) -> bytes:
    """A member's weights, as bytes, to compare two ways bit for bit."""
    return b"".join(t.numpy().tobytes() for t in outcome.run.model.state_dict().values())


def final_neg_elbo(outcome: Outcome) -> float:
    return outcome.run.history[-1].test.neg_elbo


def race(
    configs: Sequence[TrainConfig], data: Dataset, found: dict[str, tuple[str, Way]], device: torch.device, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[Outcome]]]:
    """Seconds per round of each of the `found` ways, and each way's last outcomes."""
    seconds: dict[str, list[float]] = {name: [] for name in found}
    outcomes: dict[str, list[Outcome]] = {}
    names = list(found)
    for round_ in range(rounds):
        shift = round_ % len(names)  # each way goes first in turn
        for name in names[shift:] + names[:shift]:
            with tempfile.TemporaryDirectory() as store:
                start = time.perf_counter()
                outcomes[name] = found[name][1](configs, data, Path(store))
                sync(device)
                seconds[name].append(time.perf_counter() - start)
    return seconds, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sweep_options(parser, epochs=1)
    parser.add_argument("--jobs", type=int, default=2, help="members at once, side by side (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each way once per round (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="1 round: a smoke test")
    parser.add_argument("--cluster", metavar="ADDRESS", help="also train through a Ray cluster at this address")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    check_data_dir(parser, args)

    device = resolve_device(args.device)
    configs = sweep_configs(args)
    data = vaecli.load_dataset("mnist", args.data_dir)
    found = ways(device, args.jobs, args.cluster)
    seconds, outcomes = race(configs, data, found, device, args.rounds)

    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"vaecli {vaecli.__version__} sweep benchmark, torch {torch.__version__}, {device.type} ({where})")
    print(f"machine: {machine()}")
    print(f"MNIST {len(data.train.images)} train images, {describe_sweep(args, len(configs))}, {args.rounds} round(s)")
    print()
    print(f"{'way':13} {'ablate options':22} {'speed':>6}  {'range':>12}  seconds per round")
    for name, times in seconds.items():
        ratios = [a / b for a, b in zip(seconds["one by one"], times, strict=True)]
        spread = f"{min(ratios):.2f} to {max(ratios):.2f}"
        rounds = " ".join(f"{s:.1f}" for s in times)
        print(f"{name:13} {found[name][0]:22} {statistics.median(ratios):>5.2f}x  {spread:>12}  {rounds}")
    print("(speed: the median over rounds of one by one's seconds over this way's; more is faster)")
    print()

    print(f"{'member':22} " + " ".join(f"{name + ' -ELBO':>18}" for name in outcomes))
    for i, config in enumerate(configs):
        losses = " ".join(f"{final_neg_elbo(o[i]):>18.4f}" for o in outcomes.values())
        print(f"{f'H={config.model.latent_dim}, lam={config.lam:g}, seed {config.seed}':22} {losses}")
    ok = True
    for way in ("side by side", "cluster"):
        if way in outcomes:
            same = [digest(a) == digest(b) for a, b in zip(outcomes["one by one"], outcomes[way], strict=True)]
            ok &= all(same)
            print(f"{way}, the same weights as one by one bit for bit: {'yes' if all(same) else 'NO'}")
    if "cluster" in seconds and "side by side" in seconds:
        extra = [(c - s) / len(configs) for c, s in zip(seconds["cluster"], seconds["side by side"], strict=True)]
        print(f"cluster's overhead per member against side by side: {statistics.median(extra):.2f} s (median)")
    alone, stacked = outcomes["one by one"], outcomes["stacked"]
    worst = max(
        abs(final_neg_elbo(a) - final_neg_elbo(b)) / abs(final_neg_elbo(a)) for a, b in zip(alone, stacked, strict=True)
    )
    ok &= worst <= AGREE
    print(f"stacked agrees with one by one (relative difference <= {AGREE:g}): {'yes' if worst <= AGREE else 'NO'} "
          f"(largest {worst:.1e})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
