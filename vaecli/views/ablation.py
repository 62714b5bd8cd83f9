"""An ablation's folder: the comparison figures, metrics.csv, metrics.json and report.md, from a sweep's members."""

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaecli import atomic
from vaecli.choices import DATASET_TITLES
from vaecli.configfile import SweepFile
from vaecli.core.images import ImageRows
from vaecli.errors import OutputError
from vaecli.studies.factor_scores import NAMES as DISENTANGLEMENT
from vaecli.studies.sweep import AXES, AXIS_LABELS, Axis, Member, Sweep, first_seed, table_rows
from vaecli.views import factor_figures, figures

SWEEP_COPY = "sweep.toml"  # the sweep file a sweep came from, kept beside its results


@dataclass(frozen=True)
class Ablation:
    """What save_ablation wrote: the table rows, and (title, file name) of each figure."""

    rows: list[dict]
    figures: list[tuple[str, str]]


def save_figures(members: list[Member], sweep: Sweep, rows: list[dict], images: ImageRows, folder: Path) -> list:
    """Write the comparison figures of the members that did not fail; (title, file name) of each."""
    shown, varies = first_seed(members, sweep), sweep.varies
    if not shown:
        return []
    drawn = [
        ("Random samples", "samples.png", figures.compare_samples(shown, varies)),
    ]
    two_d = [m for m in shown if m.config.model.latent_dim == 2]
    if two_d:
        title = "2-D latent manifolds (members with H = 2)"
        drawn.append((title, "manifolds.png", figures.compare_manifolds(two_d, varies)))
    kl = [row["kl_per_dim"] for row in rows if row["kl_per_dim"]]
    drawn += [
        ("Reconstructions", "recon.png", figures.compare_reconstructions(shown, varies, images)),
        ("KL per latent dimension", "kl_per_dim.png", figures.kl_per_dim_bars(shown, varies, kl)),
        ("Training curves", "curves.png", figures.compare_curves([m for m in members if not m.failed], varies)),
    ]
    if rows and DISENTANGLEMENT[0] in rows[0]:
        title = "Disentanglement metrics"
        drawn.append((title, "disentanglement.png", factor_figures.metrics_against(rows, sweep)))
    for _, name, fig in drawn:
        figures.save(fig, folder / name)
    return [(title, name) for title, name, _ in drawn]


def save_ablation(
    members: list[Member],
    sweep: Sweep,
    images: ImageRows,
    folder: Path | str,
    iw_samples: int | None = None,
    sweep_file: SweepFile | None = None,
) -> Ablation:
    """Write the figures, metrics.csv, metrics.json and report.md of a scored sweep into `folder`, and a copy
    of the sweep file it came from (`sweep_file`) as sweep.toml."""
    folder = Path(folder)
    if sweep_file is not None:
        atomic.write_text(folder / SWEEP_COPY, sweep_file.text)
    rows = table_rows(members, sweep, iw_samples)
    made = save_figures(members, sweep, rows, images, folder)
    atomic.write_text(folder / "metrics.csv", to_csv(rows))
    atomic.write_json(
        folder / "metrics.json",
        {
            "command": sweep.command(),
            "compared": sweep.varies,
            "rows": [{k: None if v != v else v for k, v in row.items()} for row in rows],  # NaN is not JSON
            "members": [_member_entry(m) for m in members],
        },
    )
    atomic.write_text(folder / "report.md", report(sweep, rows, made, members, sweep_file))
    return Ablation(rows, made)


@dataclass(frozen=True)
class StoredAblation:
    """An ablation's folder read back: what `vaecli info` and `vaecli runs --sweeps` show of it."""

    path: Path
    command: str  # the command line that reproduces it
    compared: list[str]  # the axes' labels: "H", "lam", "free bits"
    settings: int
    members: list[dict[str, Any]]  # each member's run folder, whether it was reused or failed, its metrics
    modified: float

    @property
    def failed(self) -> int:
        return sum("failed" in m for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "command": self.command,
            "compared": self.compared,
            "settings": self.settings,
            "members": self.members,
            "report": str(self.path / "report.md"),
        }


def is_ablation_folder(folder: Path) -> bool:
    """Whether `folder` holds an ablation's results (its metrics.json names members and a command)."""
    try:
        data = json.loads((Path(folder) / "metrics.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"command", "members", "rows"} <= set(data)


def read_ablation(folder: Path) -> StoredAblation:
    """The ablation in `folder`; a folder that holds none, or a damaged one, raises OutputError saying so."""
    folder = Path(folder)
    path = folder / "metrics.json"
    if not is_ablation_folder(folder):
        raise OutputError(f"{folder}: not an ablation folder (no metrics.json of a sweep)")
    data = json.loads(path.read_text())
    rows, members = data["rows"], data["members"]
    if not (isinstance(rows, list) and isinstance(members, list) and isinstance(data["command"], str)):
        raise OutputError(f"{path}: not the metrics of a sweep ('rows' and 'members' must be lists)")
    if not all(isinstance(r, dict) for r in rows) or not all(isinstance(m, dict) and "path" in m for m in members):
        raise OutputError(f"{path}: a row or member of the sweep is not an object with its run's path")
    compared = data.get("compared")  # folders of earlier versions: every axis of the table
    if not (isinstance(compared, list) and all(isinstance(c, str) for c in compared)):
        compared = [key for key in (rows[0] if rows else {}) if key in AXIS_LABELS]
    return StoredAblation(folder, data["command"], compared, len(rows), members, path.stat().st_mtime)


def list_ablations(store: Path) -> list[StoredAblation]:
    """Every ablation folder in the run store, newest first."""
    if not Path(store).is_dir():
        return []
    found = [read_ablation(p) for p in Path(store).iterdir() if p.is_dir() and is_ablation_folder(p)]
    return sorted(found, key=lambda a: a.modified, reverse=True)


def _member_entry(member: Member) -> dict:
    entry: dict = {"path": str(member.path), "reused": member.reused}
    if member.error is not None:
        return entry | {"failed": str(member.error)}
    return entry | (member.metrics.to_dict() if member.metrics is not None else {})


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The table as CSV; the per-dimension KL list is left to the JSON."""
    fields = [k for k in rows[0] if k != "kl_per_dim"] if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items() if k in fields})
    return buffer.getvalue()


def to_markdown(rows: list[dict[str, Any]], leave_out: Sequence[str] = (), digits: int = 2) -> str:
    """The table as GitHub Markdown, mean ± std when there are several seeds; without the columns `leave_out`."""
    fields = [k for k in rows[0] if k != "kl_per_dim" and not k.endswith("_std") and k not in leave_out] if rows else []
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for row in rows:
        cells = []
        for k in fields:
            value = row[k]
            if isinstance(value, float):
                text = Axis.text(value) if k in AXIS_LABELS else f"{value:.{digits}f}"
            else:
                text = str(value)
            if f"{k}_std" in row and not math.isnan(row[f"{k}_std"]):
                text += f" ± {row[f'{k}_std']:.{digits}f}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(
    sweep: Sweep,
    rows: list[dict[str, Any]],
    figures: Sequence[tuple[str, str]],
    members: Sequence[Member] = (),
    sweep_file: SweepFile | None = None,
) -> str:
    """report.md: what was compared, on which data, the figures, the table, the command (and the sweep file)."""
    lines = [
        f"# VAE ablation over {' and '.join(sweep.varies)}",
        "",
        f"Every member: {sweep.base.describe(long=True, seed=False)}; but for {' and '.join(sweep.varies)}, "
        f"as compared below; seeds {', '.join(map(str, sweep.seeds))}.",
        "",
        f"Objective: {_objectives(sweep, members)}.",
        "",
        "Reproduce with:",
        "",
        "```bash",
        sweep.command(),
        "```",
        "",
    ]
    if sweep_file is not None:
        lines += [
            f"The sweep came from `{sweep_file.path}` (sha256 `{sweep_file.digest}`), kept beside this report as "
            f"[{SWEEP_COPY}]({SWEEP_COPY}): `vaecli ablate --config {SWEEP_COPY}` runs it again.",
            "",
        ]
    factors = bool(rows) and DISENTANGLEMENT[0] in rows[0]
    lines += [
        "## Metrics (test set, nats per image)",
        "",
        to_markdown(rows, DISENTANGLEMENT if factors else ()),
    ]
    if factors:
        others = [k for k in rows[0] if k not in DISENTANGLEMENT and k not in AXIS_LABELS and k != "seeds"]
        lines += [
            "## Disentanglement (0 to 1, higher is better)",
            "",
            f"Each member's mean codes of factor combinations drawn uniformly from all of "
            f"{DATASET_TITLES[sweep.base.dataset]} (train and test images alike, as disentanglement_lib draws "
            "them), the same draws (seed 0) for every member.",
            "",
            to_markdown(rows, others, digits=3),
        ]
    failed = [m for m in members if m.error is not None]
    if failed:
        lines += ["## Failed members", ""]
        lines += [f"- {m.label(sweep.varies)}, seed {m.config.seed}: {m.error}" for m in failed]
        lines.append("")
    for title, filename in figures:
        lines += [f"## {title}", "", f"![{title}]({filename})", ""]
    return "\n".join(lines)


def _objectives(sweep: Sweep, members: Sequence[Member]) -> str:
    """What the members optimised: one objective for all, or each setting's."""
    configs = [m.config for m in members] or sweep.members()
    named = list(dict.fromkeys(c.describe_objective() for c in configs))
    if len(named) == 1:
        return named[0]
    by_setting = {sweep.setting_of(c): c for c in configs}
    labels = [AXES[name].label for name, _ in sweep.axes]
    return "; ".join(
        ", ".join(f"{label}={Axis.text(v)}" for label, v in zip(labels, setting, strict=True) if label in sweep.varies)
        + f": {config.describe_objective()}"
        for setting, config in by_setting.items()
    )
