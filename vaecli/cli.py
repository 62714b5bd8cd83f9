"""The command line: parse, build a config, call one library function, render.

The only module that imports typer or rich. torch and matplotlib are imported
inside commands, so `vaecli --help` stays fast.
"""

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from vaecli import __version__
from vaecli.config import DATASETS, RECON_KINDS, ModelConfig, TrainConfig
from vaecli.errors import VaeError

if TYPE_CHECKING:
    from vaecli.metrics import EpochRecord
    from vaecli.runs import Outcome

# click's own error base (typer vendors click and exports only BadParameter)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

stderr = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print one `error: ...` line on stderr and exit with `code`."""
    stderr.print(Text.assemble(("error: ", "bold red"), message))
    sys.exit(code)


class Group(TyperGroup):
    """Turns every error a user can fix into one line on stderr and a non-zero exit."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except VaeError as e:
            fail(str(e))
        except ClickException as e:
            # the program is always vaecli here, also under a test runner that names it otherwise
            command = " ".join(["vaecli", *e.ctx.command_path.split()[1:]]) if getattr(e, "ctx", None) else ""
            hint = f" (see '{command} --help')" if command else ""
            fail(e.format_message() + hint, e.exit_code)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def join_number_lists(args: list[str], names: tuple[str, ...]) -> list[str]:
    """['--layers', '512', '256'] -> ['--layers', '512,256'] for the options in `names`."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        joined.append(args[i])
        i += 1
        if joined[-1] in names:
            end = i
            while end < len(args) and _is_number(args[end]):
                end += 1
            if end > i:
                joined.append(",".join(args[i:end]))
                i = end
    return joined


def number_lists(*names: str) -> type[TyperCommand]:
    """A command class that reads `--opt 1 2 3` as `--opt 1,2,3` for the options `names`.

    The homework writes lists this way; a plain Typer list option would need the
    flag before every value.
    """

    class NumberListCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            return super().parse_args(ctx, join_number_lists(args, names))

    return NumberListCommand


def parse_ints(text: str, option: str, minimum: int = 1) -> tuple[int, ...]:
    """'512,256' -> (512, 256), each at least `minimum`."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected whole numbers, got {text!r}", param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one number", param_hint=option)
    if min(values) < minimum:
        raise typer.BadParameter(f"every value must be at least {minimum}, got {min(values)}", param_hint=option)
    return values


Recon = Enum("Recon", {k: k for k in RECON_KINDS}, type=str)
DatasetName = Enum("DatasetName", {k: k for k in DATASETS}, type=str)
Device = Enum("Device", {k: k for k in ("auto", "cpu", "cuda", "mps")}, type=str)

# options shared by every command that trains or reuses a run; declared once
HiddenOpt = Annotated[
    int, typer.Option("--hidden", "-H", min=1, help="Latent size H (mu and logvar each have H units).")
]
LamOpt = Annotated[float, typer.Option("--lam", min=0.0, help="Weight of the KL term: loss = recon + lam * KL.")]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Passes over the training set.")]
LayersOpt = Annotated[
    str,
    typer.Option(
        metavar="N [N ...]",
        show_default="512 256",
        help="Encoder hidden layer sizes (decoder mirrors them), e.g. --layers 512 256.",
    ),
]
ReconOpt = Annotated[
    Recon, typer.Option(help="Likelihood: bernoulli (BCE on logits) or gaussian (summed squared error).")
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per optimizer step.")]
LrOpt = Annotated[float, typer.Option(help="Adam learning rate (> 0).")]
SeedOpt = Annotated[
    int, typer.Option(min=0, help="Seed for init, shuffling and noise; same seed on CPU, same weights.")
]
DatasetOpt = Annotated[DatasetName, typer.Option(help="mnist or fashion-mnist.")]
BinarizeOpt = Annotated[
    bool, typer.Option("--binarize", help="Dynamic binarization: a fresh Bernoulli draw of every batch.")
]
DeviceOpt = Annotated[Device, typer.Option(help="auto picks CUDA when present.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Folder holding MNIST/raw/*-ubyte.", show_default="$VAECLI_DATA_DIR, else ~/.cache/vaecli/data"),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Download the data into --data-dir when it is missing there.")
]
RunsDirOpt = Annotated[
    Path | None, typer.Option(help="Where runs are kept and found.", show_default="$VAECLI_RUNS, else ./runs")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Train again even if a finished run with this config exists.")]

app = typer.Typer(
    cls=Group,
    help="Train and understand Variational Autoencoders on MNIST-like data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"vaecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train and understand Variational Autoencoders on MNIST-like data."""


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


class TrainingDisplay:
    """Rich progress bar and one table row per epoch; plain JSON lines with --json."""

    def __init__(self, console: Console, as_json: bool) -> None:
        self.console, self.as_json = console, as_json
        self.progress: Any = None

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: Any) -> None:
        self.config, self.steps = config, steps_per_epoch
        if self.as_json:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(
            f"Training a VAE ({_describe(config)}) on {device}: "
            f"{steps_per_epoch} batches of {config.batch_size} per epoch"
        )
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task(
            "train", total=config.epochs * steps_per_epoch, epoch=1, epochs=config.epochs, rate=""
        )
        self.progress.start()

    def on_batch(self, epoch: int, step: int) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[0]
        rate = f"{task.speed:.0f} it/s" if task.speed else ""
        self.progress.update(self.task, completed=(epoch - 1) * self.steps + step, epoch=epoch, rate=rate)

    def on_epoch(self, record: "EpochRecord") -> None:
        if self.as_json:
            print(json.dumps({"event": "epoch", **record.to_dict()}), flush=True)
            return
        self.console.print(epoch_row(record, header=record.epoch == 1))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def epoch_row(record: "EpochRecord", header: bool) -> Table:
    """One epoch as a table row with fixed widths, so rows printed apart line up.

    lam * KL and the total are shown only when lam != 1; at lam = 1 they equal KL and -ELBO.
    Eleven columns fit in 80 characters.
    """
    weighted = record.lam != 1.0
    table = Table(
        box=None, show_header=header, header_style="bold", pad_edge=False, padding=(0, 1), collapse_padding=True
    )
    table.add_column("ep", width=3, justify="right")
    cells = [str(record.epoch)]
    for split, terms in (("train", record.train), ("test", record.test)):
        columns = [("recon", terms.recon), ("KL", terms.kl)]
        if weighted:
            columns += [("λ·KL", record.lam * terms.kl), ("total", terms.total(record.lam))]
        columns.append(("-ELBO", terms.neg_elbo))
        for name, value in columns:
            table.add_column(f"{split}\n{name}", width=6, justify="right")
            cells.append(_fmt(value))
    table.add_column("time", width=5, justify="right")
    cells.append(f"{record.seconds:.1f}s")
    table.add_row(*cells)
    return table


def _describe(config: TrainConfig) -> str:
    layers = "-".join(map(str, config.model.hidden_layers)) or "none"
    return f"H={config.model.latent_dim}, lam={config.lam:g}, layers {layers}, {config.model.recon}, {config.dataset}"


def _summary(outcome: "Outcome") -> Panel:
    run = outcome.run
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("folder", str(run.path))
    files = sorted(p for p in run.path.iterdir() if p.is_file() and not p.name.startswith("."))
    grid.add_row("files", ", ".join(f"{p.name} ({p.stat().st_size / 1e6:.2f} MB)" for p in files))
    grid.add_row("config", _describe(run.config) + f", {run.config.epochs} epochs, seed {run.config.seed}")
    if run.final is not None:
        t = run.final.test
        grid.add_row("test", f"recon {t.recon:.2f}  KL {t.kl:.2f}  -ELBO {t.neg_elbo:.2f} nats per image")
    seconds = run.info.get("train_seconds")
    if seconds is not None:
        per_epoch = sum(r.seconds for r in run.history) / max(len(run.history), 1)
        grid.add_row("time", f"{seconds:.1f} s in all, {per_epoch:.2f} s per epoch on {run.info.get('device', '?')}")
    title = "reused finished run" if outcome.reused else "run saved"
    return Panel(grid, title=title, title_align="left", expand=False)


@app.command(cls=number_lists("--layers"))
def train(
    hidden: HiddenOpt = 2,
    lam: LamOpt = 1.0,
    epochs: EpochsOpt = 20,
    layers: LayersOpt = "512,256",
    recon: ReconOpt = Recon.bernoulli,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 1e-3,
    seed: SeedOpt = 0,
    dataset: DatasetOpt = DatasetName.mnist,
    binarize: BinarizeOpt = False,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    out: Annotated[
        Path | None, typer.Option(help="Run folder.", show_default="<runs-dir>/<name from the config>")
    ] = None,
    runs_dir: RunsDirOpt = None,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per epoch on stdout, then one for the run.")
    ] = False,
) -> None:
    """Train a VAE and save weights, metrics and loss curves in a run folder.

    A finished run with the same config is reused unless --force.
    """
    from vaecli.runs import train_or_reuse

    config = TrainConfig(
        model=ModelConfig(latent_dim=hidden, hidden_layers=parse_ints(layers, "--layers"), recon=recon.value),
        lam=lam,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        dataset=dataset.value,
        binarize=binarize,
    )
    console = Console(quiet=quiet or as_json)
    display = TrainingDisplay(console, as_json and not quiet)
    try:
        outcome = train_or_reuse(
            config,
            out=out,
            store=runs_dir,
            force=force,
            device=device.value,
            data_dir=data_dir,
            download=download or None,
            observer=display,
        )
    finally:
        display.close()
    if as_json and not quiet:
        final = outcome.run.final
        print(
            json.dumps(
                {
                    "event": "done",
                    "run": str(outcome.run.path),
                    "reused": outcome.reused,
                    **(final.to_dict() if final else {}),
                }
            )
        )
    if outcome.reused:
        console.print("A finished run with this config exists; reusing it (--force trains again).")
    console.print(_summary(outcome))


def main() -> None:
    app()
