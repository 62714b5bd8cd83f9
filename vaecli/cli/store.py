"""`vaecli info` and `vaecli runs`: what a run holds, and what the store holds."""

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vaecli.cli.app import command, stdout
from vaecli.cli.params import RunsDirOpt

if TYPE_CHECKING:
    from vaecli.views.ablation import StoredAblation

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@command()
def info(
    run: Annotated[Path, typer.Argument(help="A run folder or a model.safetensors file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a run's config, test metrics, training time, files and vaecli version; or an ablation folder's
    members, what they compare and its report."""
    from vaecli.store.checkpoint import run_info
    from vaecli.views.ablation import is_ablation_folder, read_ablation

    if run.is_dir() and is_ablation_folder(run):
        _ablation_info(read_ablation(run), as_json)
        return
    data = run_info(run)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", data["path"])
    grid.add_row("config", data["description"])
    grid.add_row("model", f"{data['parameters']:,} parameters")
    final = data["final"] or {}
    score = f": {final['test_objective']:.2f} nats on the test set" if final.get("test_objective") is not None else ""
    grid.add_row("objective", data["objective"] + score)
    if data["final"]:
        f = data["final"]
        grid.add_row("test", f"recon {f['test_recon']:.2f}, KL {f['test_kl']:.2f}, -ELBO {f['test_neg_elbo']:.2f} nats")
        grid.add_row(
            "train", f"recon {f['train_recon']:.2f}, KL {f['train_kl']:.2f}, -ELBO {f['train_neg_elbo']:.2f} nats"
        )
    if data["train_seconds"] is not None:
        grid.add_row(
            "time", f"{data['train_seconds']:.1f} s, {data['seconds_per_epoch']:.2f} s per epoch on {data['device']}"
        )
    grid.add_row("files", ", ".join(f"{name} ({_size(n)})" for name, n in data["files"].items()))
    grid.add_row("version", f"vaecli {data['vaecli_version']}")
    stdout().print(grid)


def _ablation_info(ablation: "StoredAblation", as_json: bool) -> None:
    if as_json:
        print(json.dumps(ablation.to_dict(), indent=2))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    failed = f", {ablation.failed} failed" if ablation.failed else ""
    grid.add_row("ablation", str(ablation.path))
    grid.add_row("compares", f"{' and '.join(ablation.compared) or '?'}: {ablation.settings} settings")
    grid.add_row(
        "members", f"{len(ablation.members)} runs{failed}: " + ", ".join(Path(m["path"]).name for m in ablation.members)
    )
    grid.add_row("reproduce", ablation.command)
    grid.add_row("report", str(ablation.path / "report.md"))
    stdout().print(grid)


def _when(seconds: float, today: str) -> str:
    """A run's time as `ls -l` shows it, short enough for an 80-column table: the time of day for today's, else
    the date."""
    day = time.strftime("%Y-%m-%d", time.localtime(seconds))
    return time.strftime("%H:%M", time.localtime(seconds)) if day == today else day


@command()
def runs(
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
    sweeps: Annotated[bool, typer.Option("--sweeps", help="List the ablation folders instead of the runs.")] = False,
) -> None:
    """List the run store: one row per run, newest first (with --sweeps, one per ablation)."""
    from vaecli.store.runs import list_runs, store_path

    store = store_path(runs_dir)
    if sweeps:
        _sweeps(store, as_json)
        return
    entries = list_runs(store)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "path": str(e.path),
                        "config": e.config.to_dict() if e.config else None,
                        "final": e.final,
                        "modified": e.modified,
                        "problem": e.problem,
                        "training": e.training.to_dict() if e.training else None,
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return
    console = stdout()
    if not entries:
        console.print(f"No runs in {store}.")
        return
    table = Table(title=f"runs in {store}", title_justify="left")
    table.add_column("name", no_wrap=True)  # whole, to copy
    for column in ("H", "lam", "epochs"):
        table.add_column(column, justify="right")
    table.add_column("test -ELBO", justify="right")  # or why not: "interrupted: epoch 3/20"
    table.add_column("date", justify="right", no_wrap=True)
    today = time.strftime("%Y-%m-%d")
    for e in entries:
        date = _when(e.modified, today)
        if e.config is None:
            style = "yellow" if e.training else "red"  # training, before its first epoch ends: not a fault
            table.add_row(e.path.name, "", "", "", Text(e.problem or "?", style=style), date)
            continue
        score = f"{e.final['test_neg_elbo']:.2f}" if e.final else Text(e.problem or "?", style="yellow")
        table.add_row(
            e.path.name, str(e.config.model.latent_dim), f"{e.config.lam:g}", str(e.config.epochs), score, date
        )
    console.print(table)


def _sweeps(store: Path, as_json: bool) -> None:
    """`vaecli runs --sweeps`: the store's ablation folders, newest first."""
    from vaecli.store.runs import list_runs
    from vaecli.views.ablation import list_ablations

    list_runs(store)  # refuses a store that is a file
    found = list_ablations(store)
    if as_json:
        print(json.dumps([a.to_dict() for a in found], indent=2))
        return
    console = stdout()
    if not found:
        console.print(f"No ablations in {store}.")
        return
    table = Table(title=f"ablations in {store}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("compares")
    table.add_column("members", justify="right")
    table.add_column("date", justify="right", no_wrap=True)
    today = time.strftime("%Y-%m-%d")
    for a in found:
        failed = f" ({a.failed} failed)" if a.failed else ""
        table.add_row(a.path.name, " and ".join(a.compared), f"{len(a.members)}{failed}", _when(a.modified, today))
    console.print(table)
