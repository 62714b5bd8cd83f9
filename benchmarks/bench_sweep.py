"""One sweep trained both ways, member by member and stacked, side by side.

    python benchmarks/bench_sweep.py --data-dir /path/to/data     # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_sweep.py --data-dir DIR --quick       # a smoke run of seconds

The sweep (default: lam 1 5 10 40 at H = 2, layers 512 256, batch 128) trains twice:
  sequential  trainer.train for each member in turn, as `vaecli ablate --stack off`
  stacked     stacked.train_stacked for all members at once, as `vaecli ablate --stack on`
The machine is noisy (shared cores, thermal throttling), so the two take turns
in one process: each runs in its own thread, which an Observer hook pauses after
every 1/(epochs * slices) of its steps, and then the other does the same share
of its own work. A variant's seconds are counted only while it works (setup and
evaluations included); the ratio sequential/stacked is the median of the
per-slice ratios. Both ways must end with the same test -ELBO for every member,
up to the rounding that training amplifies (see AGREE).
"""

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

import vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.data import Dataset
from vaecli.stacked import train_stacked
from vaecli.trainer import Observer, TrainResult, resolve_device, train

# the most relative difference in a member's final test -ELBO that still counts as the same result. Training
# amplifies rounding: the products add in another order stacked, and after 3 MNIST epochs that moved lam = 1's
# -ELBO by 0.6 nats (0.4 %); a member trained alone twice, once from weights nudged by one ulp, moved by 0.34
AGREE = 0.01


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Turns(Observer):
    """A variant in its own thread that stops after each of `slices` equal shares of its steps until told to go on."""

    def __init__(self, name: str, total_steps: int, slices: int, device: torch.device) -> None:
        self.name, self.total, self.n_slices, self.device = name, total_steps, slices, device
        self.done = 0  # steps run so far
        self.stops = [round(total_steps * k / slices) for k in range(1, slices)]  # pause after these steps
        self.slices: list[tuple[float, float]] = []  # (share of all steps, seconds)
        self.results: list[TrainResult] = []
        self._go, self._paused = threading.Semaphore(0), threading.Semaphore(0)
        self._error: BaseException | None = None
        self.finished = False

    def start(self, work: Callable[["Turns"], list[TrainResult]]) -> None:
        threads = torch.get_num_threads()

        def body() -> None:
            torch.set_num_threads(threads)  # a new thread's pool must match the main thread's
            self._go.acquire()
            self._begin()
            try:
                self.results = work(self)
                sync(self.device)
            except BaseException as e:  # handed to the main thread by turn()
                self._error = e
            self._end()
            self.finished = True
            self._paused.release()

        threading.Thread(target=body, name=self.name, daemon=True).start()

    def turn(self) -> None:
        """Let the variant run its next slice; returns when it has paused or finished."""
        if self.finished:  # fewer steps than turns: nothing left to run
            return
        self._go.release()
        self._paused.acquire()
        if self._error is not None:
            raise self._error

    def on_batch(self, epoch: int, step: int) -> None:
        self.done += 1
        if self.stops and self.done >= self.stops[0]:
            while self.stops and self.done >= self.stops[0]:
                self.stops.pop(0)
            sync(self.device)
            self._end()
            self._paused.release()
            self._go.acquire()
            self._begin()

    def _begin(self) -> None:
        self.mark, self.mark_steps = time.perf_counter(), self.done

    def _end(self) -> None:
        self.slices.append(((self.done - self.mark_steps) / self.total, time.perf_counter() - self.mark))

    def seconds(self) -> float:
        return sum(s for _, s in self.slices)


def slice_ratios(a: Turns, b: Turns) -> list[float]:
    """a's seconds per unit of its work over b's, slice by slice (slices where either did no step are left out)."""
    return [(sa / fa) / (sb / fb) for (fa, sa), (fb, sb) in zip(a.slices, b.slices, strict=False) if fa > 0 and fb > 0]


def race(configs: Sequence[TrainConfig], data: Dataset, device: torch.device, slices: int) -> tuple[Turns, Turns]:
    """Train the members one by one and stacked, taking turns; the two variants with their clocks and results."""
    steps = -(-len(data.train.images) // configs[0].batch_size) * configs[0].epochs
    total = slices * configs[0].epochs
    sequential = Turns("sequential", steps * len(configs), total, device)
    stacked = Turns("stacked", steps, total, device)
    sequential.start(lambda obs: [train(c, data, device=str(device), observer=obs) for c in configs])
    stacked.start(lambda obs: train_stacked(configs, data, device=str(device), observer=obs))
    for k in range(total):
        pair = (sequential, stacked) if k % 2 == 0 else (stacked, sequential)  # neither always goes first
        for variant in pair:
            variant.turn()
    return sequential, stacked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("VAECLI_DATA_DIR"), help="holds MNIST/raw")
    parser.add_argument("--lam", type=float, nargs="+", default=[1.0, 5.0, 10.0, 40.0], help="the members' lam")
    parser.add_argument("--hidden", type=int, nargs="+", default=[2], help="the members' latent sizes (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the members' seeds (default 0)")
    parser.add_argument("--layers", type=int, nargs="+", default=[512, 256], help="hidden layers (default 512 256)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every member (default 3)")
    parser.add_argument("--slices", type=int, default=4, help="turns per epoch (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 2 slices: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.slices = 1, 2
    if args.data_dir is None:
        parser.error("give --data-dir (a folder holding MNIST/raw) or set VAECLI_DATA_DIR")

    device = resolve_device(args.device)
    base = TrainConfig(
        model=ModelConfig(hidden_layers=tuple(args.layers)), epochs=args.epochs, batch_size=args.batch_size
    )
    configs = [
        replace(base, model=replace(base.model, latent_dim=h), lam=lam, seed=seed)
        for h in args.hidden
        for lam in args.lam
        for seed in args.seeds
    ]
    data = vaecli.load_dataset("mnist", args.data_dir)
    sequential, stacked = race(configs, data, device, args.slices)

    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"vaecli {vaecli.__version__} sweep benchmark, torch {torch.__version__}, {device.type} ({where})")
    layers = "-".join(map(str, (784, *args.layers)))
    print(
        f"MNIST {len(data.train.images)} train / {len(data.test.images)} test images, {len(configs)} members "
        f"(H {' '.join(map(str, args.hidden))}; lam {' '.join(f'{v:g}' for v in args.lam)}; "
        f"seeds {' '.join(map(str, args.seeds))}), model {layers}-H (mirrored), batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.slices} turns per epoch"
    )
    print()
    print(f"{'variant':10} {'s/epoch':>8}   (an epoch of the sweep: every member once over the training set)")
    for variant in (sequential, stacked):
        print(f"{variant.name:10} {variant.seconds() / args.epochs:>8.2f}")
    print()
    print(f"{'member':22} {'sequential -ELBO':>16} {'stacked -ELBO':>14} {'difference':>11}")
    worst = 0.0
    for config, alone, together in zip(configs, sequential.results, stacked.results, strict=True):
        a, b = alone.final.test.neg_elbo, together.final.test.neg_elbo
        worst = max(worst, abs(a - b) / abs(a))
        name = f"H={config.model.latent_dim}, lam={config.lam:g}, seed {config.seed}"
        print(f"{name:22} {a:>16.4f} {b:>14.4f} {a - b:>11.2e}")
    agree = "yes" if worst <= AGREE else "NO"
    print(f"members agree (relative difference <= {AGREE:g}): {agree} (largest {worst:.1e})")
    ratios = slice_ratios(sequential, stacked)
    ratio = statistics.median(ratios)
    print(
        f"ratio sequential/stacked, s/epoch: {ratio:.3f} (median of {len(ratios)} slices; "
        f"range {min(ratios):.2f} to {max(ratios):.2f}; stacked is {ratio:.2f}x the speed)"
    )
    return 0 if worst <= AGREE else 1


if __name__ == "__main__":
    sys.exit(main())
