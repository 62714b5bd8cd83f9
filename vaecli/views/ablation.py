"""An ablation's folder: the comparison figures, metrics.csv, metrics.json and report.md, from a sweep's members."""

from dataclasses import dataclass
from pathlib import Path

import torch

from vaecli import atomic
from vaecli.studies.sweep import Member, Sweep, first_seed, report, table_rows, to_csv
from vaecli.views import figures


@dataclass(frozen=True)
class Ablation:
    """What save_ablation wrote: the table rows, and (title, file name) of each figure."""

    rows: list[dict]
    figures: list[tuple[str, str]]


def save_figures(members: list[Member], sweep: Sweep, rows: list[dict], images: torch.Tensor, folder: Path) -> list:
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
    for _, name, fig in drawn:
        figures.save(fig, folder / name)
    return [(title, name) for title, name, _ in drawn]


def save_ablation(
    members: list[Member], sweep: Sweep, images: torch.Tensor, folder: Path | str, iw_samples: int | None = None
) -> Ablation:
    """Write the figures, metrics.csv, metrics.json and report.md of a scored sweep into `folder`."""
    folder = Path(folder)
    rows = table_rows(members, sweep, iw_samples)
    made = save_figures(members, sweep, rows, images, folder)
    atomic.write_text(folder / "metrics.csv", to_csv(rows))
    atomic.write_json(
        folder / "metrics.json",
        {
            "command": sweep.command(),
            "rows": [{k: None if v != v else v for k, v in row.items()} for row in rows],  # NaN is not JSON
            "members": [_member_entry(m) for m in members],
        },
    )
    atomic.write_text(folder / "report.md", report(sweep, rows, made, members))
    return Ablation(rows, made)


def _member_entry(member: Member) -> dict:
    entry: dict = {"path": str(member.path), "reused": member.reused}
    if member.error is not None:
        return entry | {"failed": str(member.error)}
    return entry | (member.metrics.to_dict() if member.metrics is not None else {})
