"""`vaecli eval`: a run's test-set metrics, the importance-weighted bound included."""

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vaecli.choices import DATASET_TITLES, Device
from vaecli.cli.app import command, stderr, stdout
from vaecli.cli.lists import number_lists
from vaecli.cli.params import DataDirOpt, DeviceOpt, DownloadOpt, MetricScaleOpt, ModelOpt, RunArg
from vaecli.cli.training import TrainingOptions, obtain_run, one_model, training_options

if TYPE_CHECKING:
    from rich.console import Console

    from vaecli.studies.scores import RunMetrics


@command("eval", cls=number_lists("--layers"))
@training_options(exclude=("seed", "device", "data_dir", "download"))
def evaluate(
    options: TrainingOptions,
    run_path: RunArg = None,
    model: ModelOpt = None,
    iw_samples: Annotated[
        int,
        typer.Option(min=1, max=100_000, help="Samples k of the importance-weighted bound (5000 in the literature)."),
    ] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the sampling, so a result can be repeated.")] = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    disentanglement: Annotated[
        bool | None,
        typer.Option(
            "--disentanglement/--no-disentanglement",
            help="The disentanglement metrics (BetaVAE, FactorVAE, MIG, SAP, DCI); by default where the data set "
            "has factors (dsprites).",
            show_default=False,
        ),
    ] = None,
    metric_scale: MetricScaleOpt = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Test-set metrics of a run: recon, KL, -ELBO, an importance-weighted NLL bound, active units, KL per dimension;
    on a data set with factors, the disentanglement metrics too.

    The run is RUN (or --model), or the store's run of the training options (trained first if there is
    none); --seed here seeds the sampling, so the run found is the one trained with seed 0.
    """
    from rich.progress import Progress

    from vaecli.atomic import writable
    from vaecli.core.data import load_for
    from vaecli.engine.device import resolve_device
    from vaecli.errors import ConfigError
    from vaecli.store.checkpoint import load_run
    from vaecli.studies.factor_scores import stored_disentanglement
    from vaecli.studies.scores import stored_scores

    console = stdout(quiet=as_json)
    chosen = one_model(run_path, model)
    if chosen is not None:
        loaded = load_run(chosen)
    else:
        here = replace(options, device=device.value, data_dir=data_dir, download=download or None)
        loaded = obtain_run(here, None, console)
    data = load_for(loaded.config, data_dir, download or None)
    if disentanglement and data.factors is None:
        raise ConfigError(
            f"{DATASET_TITLES[data.name]} has no factor labels, so its disentanglement cannot be measured "
            "(dsprites has them)"
        )
    if not writable(loaded.path):
        stderr.print(Text.assemble(("note: ", "bold yellow"), f"{loaded.path} is read-only: the scores are not cached"))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"IW bound, k={iw_samples}", total=len(data.test.images))
        metrics = stored_scores(
            loaded,
            data,
            iw_samples,
            seed,
            resolve_device(device.value),
            progress=lambda done, total: bar.update(task, completed=done),
        )
        factors = None
        if data.factors is not None and disentanglement is not False:
            task = bar.add_task("disentanglement", total=None)
            factors = stored_disentanglement(
                loaded,
                data,
                seed,
                metric_scale,
                progress=lambda name: bar.update(task, description=f"disentanglement: {name}"),
            )
    metrics = replace(metrics, disentanglement=factors)
    if as_json:
        print(json.dumps({"run": str(loaded.path), **metrics.to_dict()}, indent=2))
        return
    show_test_metrics(console, metrics, f"test metrics of {loaded.path} (nats per image)")
    if data.split_seed is not None:
        console.print(f"Test images: {data.split}.")
    if factors is not None:
        show_disentanglement(console, factors, DATASET_TITLES[data.name], seed, metric_scale)
    elif data.factors is None:
        console.print(f"{DATASET_TITLES[data.name]} has no factor labels: no disentanglement metrics.")


def show_test_metrics(console: "Console", metrics: "RunMetrics", title: str) -> None:
    """The test metrics as a table, and what an active unit is."""
    from vaecli.studies.scores import ACTIVE_THRESHOLD

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("reconstruction", f"{metrics.recon:.2f}")
    table.add_row("KL to the prior", f"{metrics.kl:.2f}")
    table.add_row("negative ELBO (1 sample)", f"{metrics.neg_elbo:.2f}")
    table.add_row(f"IW bound on -log p(x), k={metrics.iw_samples}", f"{metrics.iw_nll:.2f}")
    table.add_row("active units", f"{metrics.active_units} of {metrics.latent_dim}")
    ranked = sorted(enumerate(metrics.kl_per_dim), key=lambda item: -item[1])
    shown = ", ".join(f"z[{d}]: {kl:.2f}" for d, kl in ranked[:10]) + (" ..." if len(ranked) > 10 else "")
    table.add_row("KL per dimension, largest first", shown)
    console.print(table)
    console.print(f"A unit is active when the variance of its mean code over the test set exceeds {ACTIVE_THRESHOLD}.")


def show_disentanglement(console: "Console", factors: dict[str, float], data: str, seed: int, scale: float) -> None:
    """The disentanglement metrics as a table, and how their points were drawn."""
    from vaecli.studies.factor_scores import TITLES

    scores = Table(title="disentanglement (0 to 1, higher is better)", title_justify="left")
    scores.add_column("metric")
    scores.add_column("value", justify="right")
    for name, value in factors.items():
        scores.add_row(TITLES[name], f"{value:.3f}")
    console.print(scores)
    share = "" if scale == 1 else f" ({scale:g} of its sample counts)"
    console.print(
        f"Mean codes of factor combinations drawn uniformly from all of {data}, seed {seed}, "
        f"as disentanglement_lib{share}."
    )
