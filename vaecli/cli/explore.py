"""`vaecli explore`."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from vaecli.cli.app import command, in_flags, stderr, stdout
from vaecli.cli.lists import number_lists
from vaecli.cli.params import DataDirOpt, DownloadOpt, QuietOpt
from vaecli.cli.training import TrainingOptions, obtain_run, training_options


@command(cls=number_lists("--layers"))
@training_options(exclude=("data_dir", "download"))
def explore(
    options: TrainingOptions,
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="RUN",
            help="Run folders or model.safetensors files; several decode the same z side by side. "
            "Without them, the training options find (or train) the run.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("explore.html"),
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    points: Annotated[int, typer.Option(min=0, help="Test codes shown in the scatter of an H = 2 model.")] = 3000,
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML page that decodes the latent space live in the browser.

    H = 2: the latent plane with the test set's codes; the point under the pointer is decoded.

    H > 2: one slider per latent dimension, most informative first.

    The page needs no server and no network; open it from disk or mail it.
    """
    from vaecli.core.data import load_for
    from vaecli.errors import DataError
    from vaecli.views import explore as library

    console = stdout(quiet=quiet)
    if not runs:
        here = replace(options, data_dir=data_dir, download=download or None)
        runs = [obtain_run(here, None, console).path]
    loaded = library.load_runs(runs)
    datasets = {}
    for name in sorted({run.config.dataset for run in loaded}):
        first = next(run.config for run in loaded if run.config.dataset == name)  # its split, where seeded
        try:
            # never downloads unless asked: the page works without the test set
            datasets[name] = load_for(first, data_dir, download)
        except DataError as e:
            if not quiet:
                note = in_flags(f"no test codes on the page: {e}")
                stderr.print(Text.assemble(("note: ", "bold yellow"), note))
    html = library.page(loaded, datasets, points=points)
    path = library.save(html, out)
    size = path.stat().st_size
    config = loaded[0].config.model
    models = f"{len(loaded)} model{'s' if len(loaded) > 1 else ''}"
    console.print(f"wrote {path} ({size / 1e6:.1f} MB): {models}, H={config.latent_dim}; open it in a browser")
