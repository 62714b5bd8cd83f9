"""`vaecli derive`: Problem 1 of the homework, derived step by step and checked on a model."""

import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vaecli.choices import Device
from vaecli.cli.app import command, stdout
from vaecli.cli.lists import number_lists, parse_floats, parse_ints
from vaecli.cli.params import DataDirOpt, DeviceOpt, DownloadOpt, ModelOpt, RunsDirOpt, option_info
from vaecli.studies.observer import SweepObserver

if TYPE_CHECKING:
    from vaecli.studies.derive import Part
    from vaecli.studies.identities import Findings


class Format(str, Enum):
    terminal = "terminal"
    markdown = "markdown"
    latex = "latex"


SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".tex": "latex"}
MATH_STYLE = "cyan"
WIDE = 110  # from this console width on, each step's reason stands beside its formula


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def prose(text: str, style: str = "") -> Text:
    """Prose from derive.PARTS with its `math` in colour."""
    from vaecli.views.export import segments

    return Text.assemble(*[(piece, MATH_STYLE if is_math else style) for is_math, piece in segments(text)])


def show_part(console: Console, p: "Part") -> None:
    console.print()
    console.rule(Text.assemble((f"Part {p.number} · ", "bold"), prose(p.title, "bold")), align="left")
    console.print(prose(p.intro))
    console.print()
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    table.add_column(justify="right", style="dim", no_wrap=True)
    wide = console.width >= WIDE
    table.add_column(ratio=3 if wide else 1)
    if wide:
        table.add_column(ratio=2)
    for i, step in enumerate(p.steps, 1):
        formula = Text(step.text, style=f"bold {MATH_STYLE}")
        why = prose(_capital(step.why), "italic")
        if wide:
            table.add_row(f"({i})", formula, why)
        else:
            reason = Table.grid(padding=(0, 1))
            reason.add_column(style="dim")
            reason.add_column()
            reason.add_row("↳", why)
            table.add_row(f"({i})", formula)
            table.add_row("", reason)
    console.print(table)
    console.print()
    console.print(prose(p.outro, "italic"))


def _value(v: float) -> str:
    return f"{v:.6f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _verdict(c: Any) -> Text:
    return Text("PASS", style="bold green") if c.passed else Text("FAIL", style="bold red")


def _note(console: Console, text: str, bullet: str = "", style: str = "dim") -> None:
    """An indented line that wraps under itself."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1 + len(bullet))
    grid.add_column()
    grid.add_row(" " + bullet, Text(text, style=style))
    console.print(grid)


def show_findings(console: Console, findings: "Findings", number: int, seconds: float) -> None:
    checks = [c for c in findings.checks if c.part == number]
    console.print()
    console.print(Text(f"Checked numerically ({seconds:.1f} s):", style="bold"))
    for line in findings.context.get(number, []):
        _note(console, line)
    if checks and console.width >= WIDE:
        table = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False)
        table.add_column("check")
        for name in ("left", "right"):
            table.add_column(name, justify="right")
        table.add_column("left − right", justify="right", no_wrap=True)
        table.add_column("needs", no_wrap=True)
        table.add_column("", no_wrap=True)
        for c in checks:
            table.add_row(c.name, _value(c.left), _value(c.right), f"{c.difference:+.2e}", c.needs, _verdict(c))
        console.print(table)
    elif checks:  # two lines per check: verdict and name, then left vs right and d = left − right
        for c in checks:
            console.print(Text.assemble(_verdict(c), "  ", c.name))
            console.print(
                Text(
                    f"      {_value(c.left)} vs {_value(c.right)}   d = {c.difference:+.2e}   needs {c.needs}",
                    style="dim",
                )
            )
    if checks:
        for how in dict.fromkeys(c.how for c in checks if c.how):
            _note(console, how, "·")
    for s in findings.skipped:
        if s.part == number:
            _note(console, f"skipped: {s.name}: {s.reason}", style="yellow")
    if number == 3 and findings.sweep:
        table = Table(box=None, header_style="bold", padding=(0, 2), pad_edge=False)
        for name in ("λ", "KL (nats)", "recon (nats)"):
            table.add_column(name, justify="right")
        table.add_column("run")
        for r in findings.sweep:
            table.add_row(
                f"{r.lam:g}", f"{r.kl:.3f}", f"{r.recon:.2f}", Path(r.run).name + (" (reused)" if r.reused else "")
            )
        console.print(table)


class SweepProgress(SweepObserver):
    """The λ sweep's training as `vaecli train` shows it, one member after another."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.display: Any = None

    def observer(self, indices: Any, configs: Any) -> Any:
        from vaecli.cli.display import TrainingDisplay

        self.close()
        self.display = TrainingDisplay(self.console)
        return self.display

    def on_reused(self, index: int, path: Any) -> None:
        self.console.print(Text(f"Using the finished run {path}", style="dim"))

    def close(self) -> None:
        if self.display is not None:
            self.display.close()
            self.display = None


def _output_format(fmt: Format, out: Path | None) -> str:
    if fmt is not Format.terminal and out is None:
        raise typer.BadParameter(f"--format {fmt.value} writes a file: give its path with --out", param_hint="--out")
    if out is not None and fmt is Format.terminal:
        if out.suffix.lower() not in SUFFIXES:
            raise typer.BadParameter(
                f"cannot tell the format of {out.name}: name it .md or .tex, or add --format", param_hint="--out"
            )
        return SUFFIXES[out.suffix.lower()]
    return fmt.value


@command(cls=number_lists("--lams", "--layers"))
def derive(
    part: Annotated[int | None, typer.Argument(min=1, max=5, help="Show only this part: 1 to 5.")] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="terminal, or write markdown / latex to --out.")
    ] = Format.terminal,
    out: Annotated[Path | None, typer.Option(help="File to write (.md or .tex picks --format).")] = None,
    checks: Annotated[bool, typer.Option(help="Check every identity numerically (--no-checks: only derive).")] = True,
    model: ModelOpt = None,
    hidden: Annotated[
        int, typer.Option("--hidden", "-H", min=1, max=2, help="Latent size of the runs checked on (1 or 2).")
    ] = 2,
    lams: Annotated[
        str, typer.Option(metavar="λ [λ ...]", show_default="1 5 10 40", help="The λ of the runs of part 3.")
    ] = "1,5,10,40",
    epochs: Annotated[
        int | None, option_info("epochs", show_default="the store's longest-trained finished runs, else 2")
    ] = None,
    layers: Annotated[str, option_info("layers")] = "512,256",
    seed: Annotated[int, option_info("seed")] = 0,
    image: Annotated[int, typer.Option(min=0, help="Which test image to check on.")] = 0,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Check on synthetic images, not MNIST.")] = False,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Derive the VAE loss step by step (Problem 1) and check each identity numerically.

    The checks run on a small model: the run store's H=2, lam=1 run or --model,
    on a real MNIST image when the data are there, else a synthetic one. Part 3
    checks runs with every --lams value; part 4 the importance-weighted bound of
    --objective iwae against log p(x); part 5 the KL split into mutual information,
    total correlation and dimension-wise KL, over 64 test images.

    The runs are the store's longest-trained finished runs of these settings
    (for lam = 1 and every --lams value), else runs trained for 2 epochs;
    --epochs chooses.
    Exits with 1 when a check fails.
    """
    from vaecli import atomic
    from vaecli.studies import derive, identities
    from vaecli.studies.checks import DeriveChecks, DeriveSettings
    from vaecli.views import export

    target = _output_format(fmt, out)
    lam_values = parse_floats(lams, "--lams", minimum=0.0)
    if len(lam_values) < 2 and (part in (None, 3)) and checks:
        raise typer.BadParameter("give at least two values to compare", param_hint="--lams")
    console = stdout(highlight=False)
    settings = DeriveSettings(
        model=model,
        hidden=hidden,
        lams=lam_values,
        epochs=epochs,
        layers=parse_ints(layers, "--layers"),
        seed=seed,
        image=image,
        synthetic=synthetic,
        device=device.value,
        data_dir=data_dir,
        download=download,
        runs_dir=runs_dir,
    )
    parts = (part,) if part else derive.PART_NUMBERS
    findings = identities.Findings()
    progress = SweepProgress(console)
    checker = DeriveChecks(settings, progress)
    for number in parts:
        if target == "terminal":
            show_part(console, derive.part(number))
        if checks:
            started = time.perf_counter()
            if target != "terminal":
                console.print(f"Checking part {number}...")
            try:
                checker.check(number, findings)
            finally:
                progress.close()
            if target == "terminal":
                show_findings(console, findings, number, time.perf_counter() - started)
    if out is not None:  # then target is a file format: _output_format saw to it
        render = export.markdown if target == "markdown" else export.latex
        path = atomic.write_text(out, render(parts, findings if checks else None))
        console.print(f"wrote {path}")
    if checks:
        _summary(console, findings)


def _summary(console: Console, findings: "Findings") -> None:
    n, failed = len(findings.checks), findings.failed
    console.print()
    if n == 0:
        console.print(Text("No check could run on this model (see 'skipped' above).", style="yellow"))
        return
    if not failed:
        console.print(Text(f"All {n} checks passed.", style="bold green"))
        return
    console.print(Text(f"{len(failed)} of {n} checks failed:", style="bold red"))
    for c in failed:
        console.print(Text(f"  FAIL  {c.name}: left − right = {c.difference:+.3e}", style="red"))
    raise typer.Exit(1)
