"""`vaecli train`."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from vaecli.cli.app import command, stdout
from vaecli.cli.display import TrainingDisplay, summary
from vaecli.cli.lists import number_lists
from vaecli.cli.params import QuietOpt, WaitOpt
from vaecli.cli.training import (
    TRAINING_OPTIONS,
    TrainingOptions,
    given_here,
    train_with_display,
    training_options,
    with_file,
)
from vaecli.engine.observer import Observers

if TYPE_CHECKING:
    from vaecli.core.data import Dataset
    from vaecli.store.runs import Outcome
    from vaecli.views.tensorboard import TensorBoardObserver

# what --resume still lets a user choose: where the data are and which device (the same type) runs it
RESUME_ALLOWS = {"device", "data_dir", "download"}


@command(cls=number_lists("--layers"))
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
    wait: WaitOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per epoch on stdout, then one for the run.")
    ] = False,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard events into <run folder>/tensorboard (needs the tensorboard extra).",
        ),
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Options from a file: TOML (hidden = 10, layers = [512, 256], ...; what --print-config prints) "
            "or a run (its folder). Options given here win over the file's.",
        ),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the config as a file that --config reads, and exit.")
    ] = False,
) -> None:
    """Train a VAE and save weights, metrics and loss curves in a run folder.

    A finished run with the same config is reused unless --force. Ctrl-C stops
    after the current batch and saves the state; --resume RUN (or the same
    command again) continues it. A run that another process is training is
    waited for, then reused.
    """
    if config_file is not None:
        options = with_file(options, config_file, lambda name: given_here(ctx, name))
    if resume is not None:
        options, out = _resume_options(ctx, options, resume, out)
    if print_config:
        from vaecli.configfile import to_toml

        print(to_toml(options.config), end="")
        return
    console = stdout(quiet=quiet or as_json)
    display = TrainingDisplay(console, as_json=as_json and not quiet)
    data, board = _tensorboard(options, out) if tensorboard else (None, None)
    shown = Observers(display, board) if board is not None else display
    outcome = train_with_display(
        options, shown, out=out, resume=resume is not None, data=data, wait=wait, on_wait=display.waiting
    )
    if board is not None:
        _tensorboard_done(board, outcome, console)
    if as_json and not quiet:
        final = outcome.run.final.to_dict() if outcome.run.final else {}
        print(json.dumps({"event": "done", "run": str(outcome.run.path), "reused": outcome.reused, **final}))
    if outcome.reused:
        console.print("A finished run with this config exists; reusing it (--force trains again).")
    console.print(summary(outcome))


def _resume_options(
    ctx: typer.Context, options: TrainingOptions, resume: Path, out: Path | None
) -> tuple[TrainingOptions, Path]:
    """The options that continue the run in `resume`: its stored config, this call's device and data."""
    from dataclasses import replace

    from vaecli.store.runs import resume_config

    given = [name for name in [*TRAINING_OPTIONS, "out"] if name not in RESUME_ALLOWS and given_here(ctx, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise typer.BadParameter(f"the run keeps its own config and folder; drop {flags}", param_hint="--resume")
    folder, config = resume_config(resume)
    return replace(options, config=config, force=False), folder


def _tensorboard(options: TrainingOptions, out: Path | None) -> tuple["Dataset", "TensorBoardObserver"]:
    """The data (loaded once: the fit and the events' images both need them) and the observer writing the events."""
    from vaecli.core.data import load_for
    from vaecli.store.runs import RunRequest
    from vaecli.views.tensorboard import TensorBoardObserver

    config = options.config
    folder = RunRequest(config, out=out, store=options.store).folder
    data = load_for(config, options.data_dir, options.download)
    return data, TensorBoardObserver([(config, folder)], data.test.images)


def _tensorboard_done(board: "TensorBoardObserver", outcome: "Outcome", console: Console) -> None:
    """A reused run gets its events from metrics.json if it has none; say where they are."""
    from vaecli.views.tensorboard import log_dir, write_finished

    if outcome.reused:
        write_finished(outcome.run, board.test_images)
    where = log_dir(outcome.run.path)
    console.print(
        f"TensorBoard events in {where}; view them: tensorboard --logdir {where.parent.parent}", soft_wrap=True
    )
