"""`vaecli ablate`: the homework's ablations in one command, with figures, metrics and a report."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vaecli.choices import MAX_MEMBERS, StackMode
from vaecli.cli.app import command, stdout
from vaecli.cli.display import member_numbers
from vaecli.cli.lists import number_lists, parse_floats, parse_ints
from vaecli.cli.params import MetricScaleOpt, QuietOpt
from vaecli.cli.training import SWEEP_LISTS, TrainingOptions, given_here, sweep_lists, training_options, with_values
from vaecli.errors import ConfigError, TrainingDiverged
from vaecli.options import BY_NAME

# lists of words (--lr-schedule constant cosine) and of numbers (--free-bits 0 0.5 1), from the table of options
WORD_FLAGS = tuple(BY_NAME[name].flag for name in SWEEP_LISTS if BY_NAME[name].spec.choices is not None)
LIST_FLAGS = ("--hidden", "-H", "--lam", "--seeds", "--layers", *(BY_NAME[name].flag for name in SWEEP_LISTS))


@command(cls=number_lists(*LIST_FLAGS, words=WORD_FLAGS))
@training_options(exclude=("hidden", "lam", "seed", *SWEEP_LISTS))
@sweep_lists
def ablate(
    ctx: typer.Context,
    options: TrainingOptions,
    vary: dict[str, tuple],
    hidden: Annotated[
        str | None,
        typer.Option("--hidden", "-H", metavar="H [H ...]", help="Latent sizes to compare, e.g. --hidden 2 10 25 50."),
    ] = None,
    lam: Annotated[
        str | None, typer.Option("--lam", metavar="LAM [LAM ...]", help="KL weights to compare, e.g. --lam 1 5 10 40.")
    ] = None,
    seeds: Annotated[str, typer.Option(metavar="S [S ...]", help="Train every setting once per seed.")] = "0",
    iw_samples: Annotated[
        int, typer.Option(min=1, max=100_000, help="Samples k of the importance-weighted NLL bound.")
    ] = 100,
    metric_scale: MetricScaleOpt = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="Folder for figures, tables and report.", show_default="<runs-dir>/<sweep name>")
    ] = None,
    stack: Annotated[
        StackMode,
        typer.Option(
            help="Train members of one architecture together as one stacked model: "
            "auto does where it is faster (on a GPU), on always, off never."
        ),
    ] = StackMode.auto,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Members trained at once, side by side on the CPU, one CPU thread each.",
            show_default="one per CPU thread, up to 4; 1 on a GPU",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Train the members as tasks on a Ray cluster: auto (RAY_ADDRESS, or the cluster started on "
            "this machine) or the head node's HOST:PORT. Results come back here (needs the ray extra).",
        ),
    ] = None,
    cpus_per_member: Annotated[
        int, typer.Option(min=1, help="With --cluster: the CPUs (and torch threads) each member's task takes.")
    ] = 1,
    retries: Annotated[
        int, typer.Option(min=0, help="With --cluster: how often a member is run again after its worker died.")
    ] = 3,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Allow a sweep of more than 64 members.")] = False,
    quiet: QuietOpt = False,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard events into each member's <run folder>/tensorboard "
            "(needs the tensorboard extra); tensorboard --logdir <runs-dir> compares them.",
        ),
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="The sweep from a TOML file: options as train's --config reads them, a list of values for each "
            "option to compare (hidden = [2, 10, 25, 50]) and seeds = [...]. Options given here win over the "
            "file's; the sweep's folder keeps a copy.",
        ),
    ] = None,
) -> None:
    """Compare VAEs over latent sizes (--hidden), KL weights (--lam), objective options or learning-rate schedules.

    Every listed option takes several values (--free-bits 0 0.5 1, --objective iwae --k 1 5 50,
    --lr-schedule constant cosine, ...); the members are their cross product. Writes figures, metrics
    and a report.

    Unlisted settings take the train defaults (H = 2, lam = 1); finished members are
    reused from the run store, and an interrupted sweep trains only what is missing.
    Stacked or not, each member ends as it would trained alone with its seed.
    """
    from vaecli.cli.display import SweepDisplay
    from vaecli.core.data import load_for
    from vaecli.studies import sweep
    from vaecli.views.ablation import save_ablation

    sweep_file = None
    if config_file is not None:
        from vaecli.configfile import read_sweep

        sweep_file = read_sweep(config_file)
        options = with_values(options, sweep_file.options, lambda name: given_here(ctx, name), sweep_file.path)
    base = options.config
    lists = _lists(hidden, lam, seeds, vary, sweep_file, lambda name: given_here(ctx, name))
    try:
        plan = _plan(base, *lists)
        members = plan.members()
    except ConfigError as e:  # a value the sweep file gave, named by its key
        if sweep_file is None:
            raise
        from vaecli.configfile import in_keys

        raise ConfigError(in_keys(sweep_file.path, str(e))) from None
    if len(members) > MAX_MEMBERS and not yes:
        raise ConfigError(f"this sweep has {len(members)} members (more than {MAX_MEMBERS}); add --yes to run it")
    folder = out if out is not None else options.store / plan.name()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; --out must be a folder")

    console = stdout(quiet=quiet)
    data = load_for(base, options.data_dir, options.download)
    settings = sweep.SweepOptions(
        store=options.store,
        device=options.device,
        force=options.force,
        iw_samples=iw_samples,
        metric_scale=metric_scale,
        stack=stack.value,
        jobs=jobs,
    )
    display = SweepDisplay(console, members)
    board = None
    try:
        if tensorboard:
            from vaecli.views.tensorboard import TensorBoardSweep

            board = TensorBoardSweep(display, data.test.images, store=options.store)
        executor = _cluster(cluster, cpus_per_member, retries, jobs, stack)
        results = sweep.run_sweep(plan, data, settings, executor=executor, observer=board or display)
    finally:
        display.close()
        if board is not None:
            board.close()

    ablation = save_ablation(results, plan, data.test.images, folder, iw_samples, sweep_file)
    for table in _metrics_tables(ablation.rows, iw_samples, len(plan.seeds)):
        console.print(table)
    board_store = options.store if board is not None else None
    _summary(console, results, folder, board_store)


def _cluster(address: str | None, cpus_per_member: int, retries: int, jobs: int | None, stack: StackMode) -> Any:
    """The cluster executor that --cluster asks for (None without it: the sweep picks one on this machine)."""
    if address is None:
        return None
    if jobs is not None:
        raise ConfigError("--jobs is for one machine; on a cluster each member is a task of --cpus-per-member CPUs")
    if stack == StackMode.on:
        raise ConfigError("--stack on trains on one machine; drop it with --cluster")
    from vaecli.studies.cluster import Cluster

    return Cluster(address, cpus_per_member=cpus_per_member, retries=retries)


def _lists(
    hidden: str | None, lam: str | None, seeds: str, vary: dict[str, tuple], sweep_file: Any, given: Any
) -> tuple[tuple, tuple, tuple, dict[str, tuple]]:
    """(latent sizes, lams, seeds, the other axes) that the command line gives, the sweep file's where it gives
    none."""
    axes = dict(sweep_file.axes) if sweep_file is not None else {}
    parsed = (
        parse_ints(hidden, "--hidden") if hidden is not None else axes.pop("hidden", ()),
        parse_floats(lam, "--lam", minimum=0.0) if lam is not None else axes.pop("lam", ()),
    )
    axes.pop("hidden", None), axes.pop("lam", None)
    if sweep_file is not None and sweep_file.seeds is not None and not given("seeds"):
        seeded = sweep_file.seeds
    else:
        seeded = parse_ints(seeds, "--seeds", minimum=0)
    return (*parsed, seeded, {**axes, **vary})


def _plan(base: Any, hidden: tuple, lams: tuple, seeds: tuple, vary: dict[str, tuple]) -> Any:
    """The Sweep that the options ask for."""
    from vaecli.studies.sweep import Sweep

    if len(vary.get("lr_schedule", ())) == 1:  # one schedule is a setting of every member, as --lr-schedule is to train
        vary = dict(vary)
        base = replace(base, lr_schedule=vary.pop("lr_schedule")[0])
    if not hidden and not lams and not vary:
        raise typer.BadParameter(
            "give the values to compare: --hidden 2 10 25 50 and/or --lam 1 5 10 40 (or --free-bits, --k, ...)"
        )
    return Sweep(base, hidden=hidden, lams=lams, seeds=seeds, vary=tuple(vary.items()))


def _summary(console: Console, results: list, folder: Path, tensorboard_store: Path | None) -> None:
    """What was trained, reused and failed, where it all is; exits 1 when a member failed."""
    reused = sum(m.reused for m in results)
    failed = [i for i, m in enumerate(results) if m.failed]
    trained = len(results) - reused - len(failed)
    console.print(
        f"{len(results)} members ({reused} reused, {trained} trained"
        + (f", {len(failed)} failed" if failed else "")
        + f"); figures, metrics.csv, metrics.json and report.md in {folder}"
    )
    if tensorboard_store is not None:
        console.print(
            f"TensorBoard events in each member's run folder; compare them: tensorboard --logdir {tensorboard_store}",
            soft_wrap=True,
        )
    if failed:
        raise TrainingDiverged(
            f"{len(failed)} of {len(results)} members failed (member{'s' if len(failed) > 1 else ''} "
            f"{member_numbers(failed)}): "
            f"{results[failed[0]].error}"
        )


def _metrics_tables(rows: list[dict], iw_samples: int, seeds: int) -> list[Table]:
    """The test metrics in nats, and the disentanglement metrics where the members have them."""
    from vaecli.studies.factor_scores import NAMES, SHORT_TITLES

    spread = f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""
    names = {
        "neg_elbo": "-ELBO",
        f"iw{iw_samples}_nll": f"IW-{iw_samples} NLL",
        "active_units": "active",
        "train_seconds": "train s",
    }
    nats = ["recon", "KL", "neg_elbo", f"iw{iw_samples}_nll", "active_units", "train_seconds"]
    tables = [_table(rows, nats, names, f"test metrics, nats per image{spread}", 2)]
    if rows and NAMES[0] in rows[0]:
        title = f"disentanglement (0 to 1, higher is better){spread}"
        tables.append(_table(rows, list(NAMES), dict(SHORT_TITLES), title, 3))
    return tables


def _table(rows: list[dict], metrics: list[str], names: dict[str, str], title: str, digits: int) -> Table:
    """One row per setting: the swept axes, then `metrics` (named by `names`), each mean ± std over seeds."""
    from vaecli.studies.sweep import AXIS_LABELS, Axis

    table = Table(title=title, title_justify="left")
    axes = [k for k in (rows[0] if rows else {}) if k in AXIS_LABELS]
    columns = [*axes, *metrics]
    if rows and "failed" in rows[0]:
        columns.insert(len(axes), "failed")
    for column in columns:
        table.add_column(names.get(column, column), justify="right", overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            text = (
                (Axis.text(value) if column in axes else f"{value:.{digits}f}")
                if isinstance(value, float)
                else str(value)
            )
            if isinstance(value, float) and value != value:  # NaN: every seed of the setting failed
                text = "-"
            std = row.get(f"{column}_std")
            if isinstance(std, float) and std == std:  # not NaN
                text += f" ± {std:.{digits}f}"
            cells.append(text)
        table.add_row(*cells)
    return table
