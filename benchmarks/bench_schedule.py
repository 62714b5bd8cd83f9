"""Learning-rate recipes side by side: how soon each reaches a test loss, and where it ends.

    python benchmarks/bench_schedule.py --data-dir DIR                      # the default study
    python benchmarks/bench_schedule.py --data-dir DIR --recipes constant@1e-3 cosine@3e-3 --seeds 0 1 2

A recipe is SCHEDULE@LR, optionally /bBATCH (cosine@3e-3/b256). Every recipe trains, through
`vaecli.train`, the settings of the homework that the default must not worsen:
  H = 20, lam 1, 10 epochs   the test -ELBO after the last epoch, and the first epoch (and the
                             training seconds up to its end) at which the test -ELBO is at most
                             --target (106 nats, the target of benchmarks/bench_train.py)
  H = 2,  lam 1, 20 epochs   the test -ELBO after the last epoch
The fits of one seed take turns recipe by recipe, so that a change in the machine's speed
spreads over all of them. The seconds are each fit's own training time (EpochRecord.seconds,
evaluations left out); bench_train.py times the chosen default against the tutorial wall clock.
"""

import argparse
import statistics
import sys
from dataclasses import dataclass, replace

from common import add_data_dir, check_data_dir, machine

import vaecli
from vaecli.choices import LR_SCHEDULES
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import Dataset
from vaecli.engine.device import resolve_device, resolve_precision


@dataclass(frozen=True)
class Recipe:
    schedule: str
    lr: float
    batch_size: int = 128

    @classmethod
    def parse(cls, text: str) -> "Recipe":
        try:
            head, _, batch = text.partition("/b")
            schedule, lr = head.split("@")
            recipe = cls(schedule, float(lr), int(batch) if batch else 128)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: write SCHEDULE@LR or SCHEDULE@LR/bBATCH") from None
        if recipe.schedule not in LR_SCHEDULES:
            raise argparse.ArgumentTypeError(f"{text!r}: the schedule is one of {', '.join(LR_SCHEDULES)}")
        return recipe

    def __str__(self) -> str:
        batch = f"/b{self.batch_size}" if self.batch_size != 128 else ""
        return f"{self.schedule}@{self.lr:g}{batch}"

    def config(self, hidden: int, epochs: int, seed: int, precision: str) -> TrainConfig:
        model = ModelConfig(latent_dim=hidden)
        base = TrainConfig(model=model, epochs=epochs, seed=seed, precision=precision)
        return replace(base, lr_schedule=self.schedule, lr=self.lr, batch_size=self.batch_size)


@dataclass
class Outcome:
    final20: float  # H = 20 after its last epoch
    final2: float  # H = 2 after its last epoch
    reached: int | None  # the first H = 20 epoch at or below the target
    seconds: float | None  # H = 20 training seconds up to that epoch's end
    epoch_seconds: float  # median H = 20 epoch


def run(recipe: Recipe, seed: int, args: argparse.Namespace, data: Dataset) -> Outcome:
    h20 = vaecli.train(recipe.config(20, args.epochs, seed, args.precision), data, device=args.device)
    h2 = vaecli.train(recipe.config(2, args.epochs2, seed, args.precision), data, device=args.device)
    losses = [r.test.neg_elbo for r in h20.history]
    reached = next((i + 1 for i, value in enumerate(losses) if value <= args.target), None)
    seconds = sum(r.seconds for r in h20.history[:reached]) if reached else None
    curve = " ".join(f"{v:.1f}" for v in losses)
    print(f"  seed {seed} {recipe!s:<22} H=20: {curve}  | H=2 final {h2.history[-1].test.neg_elbo:.2f}", flush=True)
    return Outcome(
        losses[-1],
        h2.history[-1].test.neg_elbo,
        reached,
        seconds,
        statistics.median(r.seconds for r in h20.history),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(parser)
    parser.add_argument(
        "--recipes",
        type=Recipe.parse,
        nargs="+",
        default=[Recipe("constant", 1e-3), Recipe("cosine", 3e-3), Recipe("onecycle", 3e-3)],
        help="SCHEDULE@LR[/bBATCH] each (default: constant@1e-3 cosine@3e-3 onecycle@3e-3)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every recipe (default 0)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the H = 20 fits (default 10)")
    parser.add_argument("--epochs2", type=int, default=20, help="epochs of the H = 2 fits (default 20)")
    parser.add_argument("--target", type=float, default=106.0, help="test -ELBO to reach (default 106 nats)")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (default auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    check_data_dir(parser, args)

    device = resolve_device(args.device)
    print(f"machine: {machine()}; {device.type}, {resolve_precision(args.precision, device)}")
    data = vaecli.load_dataset("mnist", args.data_dir)
    outcomes: dict[Recipe, list[Outcome]] = {r: [] for r in args.recipes}
    for seed in args.seeds:
        for recipe in args.recipes:
            outcomes[recipe].append(run(recipe, seed, args, data))

    print(f"\nmedians over seeds {' '.join(map(str, args.seeds))}:")
    print(
        f"{'recipe':<22} {'H=20 final':>10} {'H=2 final':>10} {'epoch to ' + format(args.target, 'g'):>12} "
        f"{'s to it':>8} {'s/epoch':>8}"
    )
    for recipe, results in outcomes.items():
        reached = [o.reached for o in results if o.reached is not None]
        seconds = [o.seconds for o in results if o.seconds is not None]
        epoch = f"{statistics.median(reached):g}" if len(reached) == len(results) else "not all"
        to_it = f"{statistics.median(seconds):.1f}" if len(seconds) == len(results) else "-"
        print(
            f"{recipe!s:<22} {statistics.median(o.final20 for o in results):>10.2f} "
            f"{statistics.median(o.final2 for o in results):>10.2f} {epoch:>12} {to_it:>8} "
            f"{statistics.median(o.epoch_seconds for o in results):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
