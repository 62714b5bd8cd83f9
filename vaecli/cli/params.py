"""Options that commands share, declared once.

A config's options come from the table (vaecli/options.py): `config_option` makes
`train`'s scalar form of one, `list_option` `ablate`'s list form, and the values
Typer passes go back into config values through `config_value` and `list_values`.
The options that are not part of a config (where the data and runs are, which
device) are declared here as Annotated aliases.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from vaecli.choices import Device
from vaecli.cli.lists import at_least, parse_floats, parse_ints
from vaecli.options import BY_NAME, Row


def option_info(name: str, **overrides: Any) -> Any:
    """The typer.Option of config option `name` (scalar form): its flag, help, range and metavar.

    For a command that declares the option itself: `epochs: Annotated[int, option_info("epochs")] = 2`.
    """
    row = BY_NAME[name]
    spec = row.spec
    decls = [row.flag, *([spec.short] if spec.short else [])]
    kwargs: dict[str, Any] = {"help": spec.help}
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if spec.show_default:
        kwargs["show_default"] = spec.show_default
    if row.kind is int and spec.choices is None:
        kwargs.update(min=spec.minimum, max=spec.maximum)
    elif row.kind is float and spec.minimum is not None:
        kwargs["callback"] = at_least(spec.minimum, spec.above)
    return typer.Option(*decls, **{**kwargs, **overrides})


def config_option(row: Row) -> tuple[Any, Any]:
    """(annotation, default) of `row` as `train` takes it: one value."""
    spec = row.spec
    if spec.choices is not None:
        return Annotated[spec.choices, option_info(row.name)], spec.choices(row.default)
    if row.kind is tuple:  # a list of whole numbers, read by lists.number_lists: --layers 512 256
        return Annotated[str, option_info(row.name)], ",".join(map(str, row.default))
    if row.field == "lr":  # None: the schedule's own rate
        return Annotated[float | None, option_info(row.name)], None
    return Annotated[row.kind, option_info(row.name)], row.default


def config_value(row: Row, value: Any) -> Any:
    """What Typer passed for `row`'s scalar form, as the config holds it."""
    if row.spec.choices is not None:
        return value.value
    if row.kind is tuple:
        return parse_ints(value, row.flag, minimum=int(row.spec.minimum or 0))
    return value


def list_option(row: Row) -> Any:
    """`row` as an option that takes several values to compare: `--free-bits 0 0.5 1`."""
    decls = [row.flag, *([row.spec.short] if row.spec.short else [])]
    help_text = f"{row.spec.help} Several values: compared."
    return Annotated[str | None, typer.Option(*decls, metavar="V [V ...]", help=help_text)]


def list_values(row: Row, text: str) -> tuple:
    """The values of `row`'s list form, each checked as its scalar form checks it."""
    if row.spec.choices is not None:  # --objective, --lr-schedule
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        choices = [c.value for c in row.spec.choices]
        if not values or any(v not in choices for v in values):
            raise typer.BadParameter(
                f"each value must be one of {', '.join(choices)}; got {text!r}", param_hint=row.flag
            )
        return values
    minimum = row.spec.minimum if row.spec.minimum is not None else float("-inf")
    if row.kind is int:
        return parse_ints(text, row.flag, minimum=int(minimum))
    return parse_floats(text, row.flag, minimum=minimum)


DeviceOpt = Annotated[Device, typer.Option(help="auto picks CUDA when present.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Folder holding MNIST/raw/*-ubyte (dsprites: its .npz, or its rendering's cache).",
        show_default="$VAECLI_DATA_DIR, else ~/.cache/vaecli/data",
    ),
]
MetricScaleOpt = Annotated[
    float,
    typer.Option(
        min=0.001,
        max=1.0,
        help="On a data set with factors: the share of disentanglement_lib's sample counts each "
        "disentanglement metric draws (1: its defaults; less is faster and noisier).",
    ),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="Download the data into --data-dir when it is missing there.")
]
RunsDirOpt = Annotated[
    Path | None, typer.Option(help="Where runs are kept and found.", show_default="$VAECLI_RUNS, else ./runs")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Train again even if a finished run with this config exists.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="A run folder or model.safetensors to use; without it the training options pick the run.",
    ),
]
RunArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="RUN",
        show_default=False,
        help="A run folder or model.safetensors; without it, the training options find (or train) the run.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
WaitOpt = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        callback=at_least(0.0),
        show_default="until it is done",
        help="How long to wait for another process that is training this run, then reuse it "
        "(0: not at all, exit 1 saying who trains it).",
    ),
]

# the options of where and how a config is trained, beside the config's own, in the order --help shows them
PLACE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (DeviceOpt, Device.auto),
    "data_dir": (DataDirOpt, None),
    "download": (DownloadOpt, False),
    "runs_dir": (RunsDirOpt, None),
    "force": (ForceOpt, False),
}
