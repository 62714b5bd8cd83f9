"""`vaecli train`."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vaecli.cli.app import app
from vaecli.cli.display import TrainingDisplay, summary
from vaecli.cli.options import QuietOpt, TrainingOptions, number_lists, train_with_display, training_options


@app.command(cls=number_lists("--layers"))
@training_options
def train(
    options: TrainingOptions,
    out: Annotated[
        Path | None, typer.Option(help="Run folder.", show_default="<runs-dir>/<name from the config>")
    ] = None,
    quiet: QuietOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per epoch on stdout, then one for the run.")
    ] = False,
) -> None:
    """Train a VAE and save weights, metrics and loss curves in a run folder.

    A finished run with the same config is reused unless --force.
    """
    console = Console(quiet=quiet or as_json)
    outcome = train_with_display(options, TrainingDisplay(console, as_json=as_json and not quiet), out=out)
    if as_json and not quiet:
        final = outcome.run.final.to_dict() if outcome.run.final else {}
        print(json.dumps({"event": "done", "run": str(outcome.run.path), "reused": outcome.reused, **final}))
    if outcome.reused:
        console.print("A finished run with this config exists; reusing it (--force trains again).")
    console.print(summary(outcome))
