"""`vaecli derive`: Problem 1 of the homework, derived step by step and checked on a model."""

import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vaecli.cli.app import app
from vaecli.cli.options import (
    DataDirOpt,
    Device,
    DeviceOpt,
    DownloadOpt,
    EpochsOpt,
    LayersOpt,
    ModelOpt,
    RunsDirOpt,
    SeedOpt,
    number_lists,
    parse_floats,
    parse_ints,
)

if TYPE_CHECKING:
    from vaecli.derive import Findings, Part

Format = Enum("Format", {k: k for k in ("terminal", "markdown", "latex")}, type=str)
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".tex": "latex"}
MATH_STYLE = "cyan"
WIDE = 110  # from this console width on, each step's reason stands beside its formula


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def prose(text: str, style: str = "") -> Text:
    """Prose from derive.PARTS with its `math` in colour."""
    from vaecli.export import segments

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
        for name, justify in (("check", "left"), ("left", "right"), ("right", "right")):
            table.add_column(name, justify=justify)
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


class Checker:
    """Obtains the data, the model and the runs on first use, and runs each part's checks."""

    def __init__(self, console: Console, settings: dict[str, Any]) -> None:
        self.console, self.s = console, settings
        self.data: dict[str, Any] = {}
        self.rows: list[Any] = []

    def dataset(self, name: str) -> Any:
        from vaecli.derive import find_data

        if name not in self.data:
            self.data[name] = find_data(
                name, self.s["data_dir"], download=self.s["download"], synthetic=self.s["synthetic"]
            )
        return self.data[name]

    def base_config(self) -> Any:
        from vaecli.config import ModelConfig, TrainConfig

        model = ModelConfig(latent_dim=self.s["hidden"], hidden_layers=self.s["layers"])
        return TrainConfig(model=model, lam=1.0, epochs=self.s["epochs"], seed=self.s["seed"])

    def sweep(self, lams: tuple[float, ...]) -> list[Any]:
        """The rows of the runs for `lams`, trained or reused one at a time, with progress shown."""
        from vaecli.cli.display import TrainingDisplay
        from vaecli.derive import lam_sweep

        data, _ = self.dataset("mnist")
        have = {r.lam: r for r in self.rows}
        for lam in lams:
            if lam in have:
                continue
            display = TrainingDisplay(self.console)
            try:
                (row,) = lam_sweep(
                    self.base_config(),
                    (lam,),
                    data=data,
                    in_memory=data.name == "synthetic",
                    store=self.s["runs_dir"],
                    device=self.s["device"],
                    observer=display,
                )
            finally:
                display.close()
            if row.reused:
                self.console.print(Text(f"Using the finished run {row.run}", style="dim"))
            have[lam] = row
        self.rows = sorted(have.values(), key=lambda r: r.lam)
        return [have[lam] for lam in lams]

    def subject(self) -> tuple[Any, Any, list[str]]:
        """The model and image that parts 1 and 2 are checked on, and lines describing them."""
        if "subject" in self.data:
            return self.data["subject"]
        from vaecli.config import DATASET_TITLES
        from vaecli.derive import pick_image
        from vaecli.figures import describe

        if self.s["model"] is not None:
            from vaecli.checkpoint import load_run

            run = load_run(self.s["model"])
            model, label = run.model, f"{run.path} ({describe(run.config)})"
            data, note = self.dataset(run.config.dataset)
        else:
            (row,) = self.sweep((1.0,))
            model = row.model
            data, note = self.dataset("mnist")
            title = DATASET_TITLES.get(data.name, data.name)
            label = f"{row.run} (H={self.s['hidden']}, lam=1, {self.s['epochs']} epochs, {title})"
        x, what = pick_image(data, self.s["image"])
        lines = [f"model: {label}", f"image: {what}", f"data: {note}"]
        if model.config.recon == "gaussian":
            lines.append("log p(x|z) is the loss's: minus the squared error, without the constant D/2 log π")
        self.data["subject"] = (model, x, lines)
        return self.data["subject"]

    def check(self, number: int, findings: "Findings") -> None:
        from vaecli import derive

        if number == 3:
            rows = self.sweep(self.s["lams"])
            data, note = self.dataset("mnist")
            c = self.base_config()
            layers = "-".join(map(str, c.model.hidden_layers))
            findings.sweep = rows
            findings.context[3] = [
                f"runs: H={c.model.latent_dim}, layers {layers}, {c.epochs} epochs, seed {c.seed}, "
                f"one per λ; {sum(r.reused for r in rows)} of {len(rows)} reused",
                f"run store: {Path(rows[0].run).parent}" if not rows[0].run == "in memory" else "trained in memory",
                f"data: {note}",
            ]
            findings.checks += derive.lagrangian_checks(rows)
            return
        model, x, lines = self.subject()
        findings.context[number] = lines
        if number == 2:
            findings.checks += derive.kl_checks(model, x, seed=self.s["seed"])
        elif model.config.latent_dim > derive.MAX_LATENT_DIM:
            findings.skipped.append(derive.quadrature_skipped(model.config.latent_dim))
        else:
            findings.checks += derive.identity_checks(model, x, seed=self.s["seed"])


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


@app.command(cls=number_lists("--lams", "--layers"))
def derive(
    part: Annotated[int | None, typer.Argument(min=1, max=3, help="Show only this part: 1, 2 or 3.")] = None,
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
    epochs: EpochsOpt = 2,
    layers: LayersOpt = "512,256",
    seed: SeedOpt = 0,
    image: Annotated[int, typer.Option(min=0, help="Which test image to check on.")] = 0,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Check on synthetic images, not MNIST.")] = False,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Derive the VAE loss step by step (Problem 1) and check each identity numerically.

    The checks run on a small model: the run store's H=2, lam=1 run (trained
    briefly when missing) or --model, on a real MNIST image when the data are
    there, else a synthetic one. Part 3 checks runs with every --lams value.
    Exits with 1 when a check fails.
    """
    from vaecli import atomic, derive, export

    target = _output_format(fmt, out)
    lam_values = parse_floats(lams, "--lams", minimum=0.0)
    if len(lam_values) < 2 and (part in (None, 3)) and checks:
        raise typer.BadParameter("give at least two values to compare", param_hint="--lams")
    console = Console(highlight=False)
    settings = {
        "model": model,
        "hidden": hidden,
        "lams": lam_values,
        "epochs": epochs,
        "layers": parse_ints(layers, "--layers"),
        "seed": seed,
        "image": image,
        "synthetic": synthetic,
        "device": device.value,
        "data_dir": data_dir,
        "download": download,
        "runs_dir": runs_dir,
    }
    parts = (part,) if part else (1, 2, 3)
    findings = derive.Findings()
    checker = Checker(console, settings)
    for number in parts:
        if target == "terminal":
            show_part(console, derive.part(number))
        if checks:
            started = time.perf_counter()
            if target != "terminal":
                console.print(f"Checking part {number}...")
            checker.check(number, findings)
            if target == "terminal":
                show_findings(console, findings, number, time.perf_counter() - started)
    if target != "terminal":
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
