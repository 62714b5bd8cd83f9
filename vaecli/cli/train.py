"""`vaecli train`."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vaecli.cli.app import app
from vaecli.cli.display import TrainingDisplay, summary
from vaecli.cli.options import (
    TRAINING_OPTIONS,
    QuietOpt,
    TrainingOptions,
    number_lists,
    train_with_display,
    training_options,
)

# what --resume still lets a user choose: where the data are and which device (the same type) runs it
RESUME_ALLOWS = {"device", "data_dir", "download"}


@app.command(cls=number_lists("--layers"))
@training_options
def train(
    ctx: typer.Context,
    options: TrainingOptions,
    out: Annotated[
        Path | None, typer.Option(help="Run folder.", show_default="<runs-dir>/<name from the config>")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the interrupted run in this folder, with its own config.", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per epoch on stdout, then one for the run.")
    ] = False,
) -> None:
    """Train a VAE and save weights, metrics and loss curves in a run folder.

    A finished run with the same config is reused unless --force. Ctrl-C stops
    after the current batch and saves the state; --resume RUN (or the same
    command again) continues it.
    """
    if resume is not None:
        options, out = _resume_options(ctx, options, resume, out)
    console = Console(quiet=quiet or as_json)
    display = TrainingDisplay(console, as_json=as_json and not quiet)
    outcome = train_with_display(options, display, out=out, resume=resume is not None)
    if as_json and not quiet:
        final = outcome.run.final.to_dict() if outcome.run.final else {}
        print(json.dumps({"event": "done", "run": str(outcome.run.path), "reused": outcome.reused, **final}))
    if outcome.reused:
        console.print("A finished run with this config exists; reusing it (--force trains again).")
    console.print(summary(outcome))


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter `name` was set, not left at its default."""
    source = ctx.get_parameter_source(name)  # None for a name the command does not have
    return source is not None and source.name != "DEFAULT"


def _resume_options(
    ctx: typer.Context, options: TrainingOptions, resume: Path, out: Path | None
) -> tuple[TrainingOptions, Path]:
    """The options that continue the run in `resume`: its stored config, this call's device and data."""
    from dataclasses import replace

    from vaecli.store.runs import resume_config

    given = [name for name in [*TRAINING_OPTIONS, "out"] if name not in RESUME_ALLOWS and _given(ctx, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise typer.BadParameter(f"the run keeps its own config and folder; drop {flags}", param_hint="--resume")
    folder, config = resume_config(resume)
    return replace(options, config=config, force=False), folder
