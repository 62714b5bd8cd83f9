"""`vaecli sample`, `grid`, `recon`, `traverse`, `latent`: figures of one trained model.

Each takes a RUN (or --model), or the training options, which reuse (else
train) the store's run of that config. The figure goes to --out, or to <run folder>/<command>.png.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from vaecli.choices import MAX_N
from vaecli.cli.app import command, stdout
from vaecli.cli.lists import number_lists, parse_floats, parse_ints
from vaecli.cli.params import ModelOpt, QuietOpt, RunArg
from vaecli.cli.training import TrainingOptions, obtain_run, one_model, training_options

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vaecli.core.data import Dataset
    from vaecli.store.checkpoint import Run
    from vaecli.studies.factor_scores import MutualInformation

PANEL = "Figures of a trained model"


# --out and --n of the figure commands, as Annotated metadata: `n: Annotated[int, _count("Images to decode.")]`
def _out(name: str) -> Any:
    return typer.Option(
        "--out",
        "-o",
        help="Figure file; its extension (.png, .pdf, .svg) picks the format.",
        show_default=f"<run folder>/{name}.png",
    )


def _count(help: str) -> Any:
    return typer.Option("--n", min=1, max=MAX_N, help=help)


def _check_format(out: Path | None) -> None:
    """Refuse an unknown extension before any training starts."""
    from vaecli.views.figures import FORMATS

    if out is not None and out.suffix.lstrip(".").lower() not in FORMATS:
        raise typer.BadParameter(
            f"{out}: unsupported figure format {out.suffix or '(none)'!r}; use .png, .pdf or .svg", param_hint="--out"
        )


def _latent_dim(options: TrainingOptions, model: Path | None) -> int:
    """H of the model a command will use, known before anything is trained or loaded."""
    if model is None:
        return options.config.model.latent_dim
    from vaecli.store.checkpoint import read_config

    return read_config(model).model.latent_dim


def _run(options: TrainingOptions, model: Path | None, out: Path | None, console: Console) -> "Run":
    _check_format(out)
    run = obtain_run(options, model, console)
    run.model.cpu().eval()
    return run


def _test_data(run: "Run", options: TrainingOptions) -> "Dataset":
    """The data set the run was trained on (its test split for the figures)."""
    from vaecli.core.data import load_for
    from vaecli.errors import DataError

    data = load_for(run.config, options.data_dir, options.download)
    if data.image_shape != run.config.model.image_shape:
        raise DataError(
            f"{data.source}: images are {data.image_shape}, the model expects {run.config.model.image_shape}"
        )
    return data


def _information(run: "Run", data: "Dataset") -> "MutualInformation | None":
    """What the run's latents hold about the test images' factors, where the data set has them."""
    from vaecli.studies.factor_scores import latent_information

    if data.factors is None or data.test.factors is None:
        return None
    return latent_information(run.model, data.test, data.factors.names)


def _write(fig: "Figure", run: "Run", out: Path | None, name: str, console: Console) -> None:
    from vaecli.views.figures import save

    path = save(fig, out if out is not None else default_out(run.path, name, console))
    console.print(f"wrote {path}")


def default_out(folder: Path, name: str, console: Console) -> Path:
    """<run folder>/<name>.png, or ./<run name>-<name>.png where the run folder is read-only (a shared store)."""
    from vaecli.atomic import writable

    if writable(folder):
        return folder / f"{name}.png"
    console.print(f"[dim]{folder} is read-only: the figure goes to the current folder (--out chooses)[/dim]")
    return Path(f"{folder.name}-{name}.png")


@command(cls=number_lists("--layers"), rich_help_panel=PANEL)
@training_options
def sample(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    n: Annotated[int, _count("Images to decode.")] = 64,
    nrow: Annotated[
        int | None, typer.Option(min=1, max=MAX_N, help="Images per row.", show_default="square-ish")
    ] = None,
    out: Annotated[Path | None, _out("sample")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode random z ~ N(0, I) into an image grid (the homework's Figure 2).

    Pixels are the decoder's Bernoulli means, never thresholded. --seed seeds
    the draw (and, without --model, picks the run trained with that seed).
    """
    from vaecli.views import figures

    console = stdout(quiet=quiet)
    run = _run(options, one_model(run_path, model), out, console)
    _write(figures.samples(run, n, nrow, options.config.seed), run, out, "sample", console)


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    values = parse_floats(text, "--range")
    if len(values) != 2 or not values[0] < values[1]:
        raise typer.BadParameter(
            f"give two numbers LO HI with LO < HI, e.g. --range -3 3; got {text!r}", param_hint="--range"
        )
    return values[0], values[1]


def _parse_dims(text: str, latent_dim: int) -> tuple[int, int]:
    from vaecli.core.latent import check_dims
    from vaecli.errors import ConfigError

    dims = parse_ints(text, "--dims", minimum=0)
    if latent_dim < 2:
        return check_dims(dims, latent_dim)  # says that the grid needs H >= 2
    try:
        return check_dims(dims, latent_dim)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--dims") from None


@command(cls=number_lists("--layers", "--range", "--dims"), rich_help_panel=PANEL)
@training_options
def grid(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    n: Annotated[int, _count("Tiles per side: an n x n grid.")] = 20,
    value_range: Annotated[
        str | None,
        typer.Option(
            "--range",
            metavar="LO HI",
            help="Evenly spaced z from LO to HI instead of the inverse normal CDF, e.g. --range -3 3.",
        ),
    ] = None,
    dims: Annotated[
        str,
        typer.Option(
            metavar="I J", help="The two latent dimensions that vary (H > 2); the others stay at 0.", show_default="0 1"
        ),
    ] = "0,1",
    out: Annotated[Path | None, _out("grid")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Decode a regular n x n grid of z, each image at its z (the homework's Figure 3).

    The grid's coordinates are the inverse normal CDF of (i + 0.5) / n, so
    every tile covers an equal share of the prior; --range LO HI spaces them evenly.
    """
    from vaecli.views import figures

    span = _parse_range(value_range)
    chosen = _parse_dims(dims, _latent_dim(options, one_model(run_path, model)))
    console = stdout(quiet=quiet)
    run = _run(options, one_model(run_path, model), out, console)
    _write(figures.latent_grid(run, n, chosen, span), run, out, "grid", console)


@command(cls=number_lists("--layers"), rich_help_panel=PANEL)
@training_options
def recon(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    n: Annotated[int, _count("Test images to show.")] = 32,
    nrow: Annotated[int, typer.Option(min=1, max=MAX_N, help="Images per row.")] = 8,
    out: Annotated[Path | None, _out("recon")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Test images, each row of them above its reconstructions (mean decoding of mu).

    --seed picks which test images.
    """
    from vaecli.views import figures

    console = stdout(quiet=quiet)
    run = _run(options, one_model(run_path, model), out, console)
    test = _test_data(run, options).test
    _write(figures.reconstructions(run, test.images, n, nrow, options.config.seed), run, out, "recon", console)


@command(cls=number_lists("--layers"), rich_help_panel=PANEL)
@training_options
def traverse(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    n: Annotated[int, _count("Values per row, evenly spaced from -3 to 3.")] = 11,
    top: Annotated[
        int | None,
        typer.Option(min=1, help="Only the K dimensions with the largest average KL.", show_default="all"),
    ] = None,
    image: Annotated[int, typer.Option(min=0, help="Index of the test image whose mean code the rows start from.")] = 0,
    out: Annotated[Path | None, _out("traverse")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Sweep each latent dimension from -3 to 3, the others at a test image's mean code.

    Dimensions whose average KL on the test set is below 0.01 nats are marked inactive.
    """
    from vaecli.views import figures

    console = stdout(quiet=quiet)
    run = _run(options, one_model(run_path, model), out, console)
    data = _test_data(run, options)
    test = data.test
    if image >= len(test.images):
        raise typer.BadParameter(
            f"the test set has {len(test.images)} images, so the index must be below that; got {image}",
            param_hint="--image",
        )
    information = _information(run, data)
    captures = information.captures() if information is not None else None
    fig = figures.traversals(run, test.images, test.labels, image, top, n, captures)
    _write(fig, run, out, "traverse", console)


@command(cls=number_lists("--layers"), rich_help_panel=PANEL)
@training_options
def latent(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    out: Annotated[Path | None, _out("latent")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Scatter the test set's mean codes coloured by label (the digit); for H > 2 their first two principal components.

    On a data set with factors (dsprites) also the latent x factor mutual-information heatmap, beside it
    as latent-factors.png.
    """
    from vaecli.views import factor_figures, figures

    console = stdout(quiet=quiet)
    run = _run(options, one_model(run_path, model), out, console)
    data = _test_data(run, options)
    _write(figures.latent_scatter(run, data.test.images, data.test.labels), run, out, "latent", console)
    information = _information(run, data)
    if information is not None:
        split = "test images" + ("" if data.split_seed is None else f" (split seed {data.split_seed})")
        heatmap = factor_figures.mutual_information(run, information, split)
        beside = out.with_name(f"{out.stem}-factors{out.suffix}") if out is not None else None
        _write(heatmap, run, beside, "latent-factors", console)
