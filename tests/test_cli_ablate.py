"""`vaecli ablate` through CliRunner on tiny synthetic data."""

import json
import shutil

import pytest
import torch

from tests.conftest import invoke, one_line_error, run_vaecli

FAST_ABLATE_ARGS = ["--layers", "16", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--iw-samples", "4"]
FILES = {
    "samples.png",
    "manifolds.png",
    "recon.png",
    "kl_per_dim.png",
    "curves.png",
    "metrics.csv",
    "metrics.json",
    "report.md",
}


def test_lam_sweep_as_written_in_the_homework(tiny_mnist, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("ablate", "--lam", "1", "5", "10", "40", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == FILES
    data = json.loads((out / "metrics.json").read_text())
    assert [(r["H"], r["lam"]) for r in data["rows"]] == [(2, 1.0), (2, 5.0), (2, 10.0), (2, 40.0)]
    assert "iw4_nll" in data["rows"][0] and data["command"].startswith("vaecli ablate --lam 1 5 10 40")
    report = (out / "report.md").read_text()
    assert "![2-D latent manifolds" in report and "| 2 | 40 |" in report
    assert "4 members (0 reused, 4 trained)" in result.stdout.replace("\n", " ")
    again = invoke("ablate", "--lam", "1", "5", "10", "40", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist, "--out", out)
    assert "4 members (4 reused, 0 trained)" in again.stdout.replace("\n", " ")


def test_hidden_sweep_with_commas_and_seeds(tiny_mnist, tmp_path):
    result = invoke("ablate", "--hidden", "2,3", "--seeds", "0", "1", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist)
    assert result.exit_code == 0, result.output
    (folder,) = (p for p in (tmp_path / "store").iterdir() if p.name.startswith("ablate-"))
    rows = json.loads((folder / "metrics.json").read_text())["rows"]
    assert [(r["H"], r["seeds"]) for r in rows] == [(2, 2), (3, 2)] and "KL_std" in rows[0]
    assert "±" in result.stdout
    assert len([p for p in (tmp_path / "store").iterdir() if p.name.startswith("h")]) == 4


def test_a_sweep_over_learning_rate_schedules(tiny_mnist, tmp_path):
    result = invoke("ablate", "--lr-schedule", "constant", "cosine", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist)
    assert result.exit_code == 0, result.output
    (folder,) = (p for p in (tmp_path / "store").iterdir() if p.name.startswith("ablate-"))
    assert folder.name.startswith("ablate-constant-cosine-e1-")
    data = json.loads((folder / "metrics.json").read_text())
    assert [r["schedule"] for r in data["rows"]] == ["constant", "cosine"]
    assert data["command"].startswith("vaecli ablate --lr-schedule constant cosine --epochs 1")
    runs = [json.loads(p.read_text())["config"] for p in (tmp_path / "store").glob("h*/metrics.json")]
    assert sorted((c.get("lr_schedule", "constant"), c["lr"]) for c in runs) == [("constant", 1e-3), ("cosine", 3e-3)]
    # one schedule is a setting, not an axis: the homework's sweep at the old recipe keeps its table
    one = invoke("ablate", "--lam", "1", "5", "--lr-schedule", "constant", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist)
    assert one.exit_code == 0, one.output
    assert "schedule" not in one.stdout and "1 reused" in one.stdout.replace("\n", " ")


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "give the values to compare"),
        (["--hidden", "two"], "--hidden"),
        (["--hidden", "0", "2"], "at least 1"),
        (["--lam", "-1"], "--lam"),
        (["--lam", "1", "1"], "lists a value twice"),
        (["--hidden", *map(str, range(1, 66))], "--yes"),
        (["--lam", "1", "5", "--stack", "maybe"], "--stack"),
        (["--lam", "1", "5", "--stack", "on", "--compile"], "--stack on cannot --compile"),
        (["--lam", "1", "5", "--jobs", "0"], "--jobs"),
        (["--lam", "1", "5", "--jobs", "2", "--compile"], "--jobs cannot --compile"),
        (["--lr-schedule", "constant", "step"], "--lr-schedule"),
    ],
)
def test_bad_sweeps_give_one_line(args, fragment, tiny_mnist):
    one_line_error(invoke("ablate", *args, *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist), fragment)


def test_stack_on_trains_members_together_and_says_so(tiny_mnist, tmp_path):
    args = ["ablate", "--lam", "1", "5", "--hidden", "2", "3", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist]
    result = invoke(*args, "--stack", "on", "--out", tmp_path / "on")
    assert result.exit_code == 0, result.output
    assert "members 1-4/4 stacked" in result.stdout and "4 VAEs stacked" in result.stdout
    assert "4 members (0 reused, 4 trained)" in result.stdout.replace("\n", " ")
    again = invoke(*args, "--stack", "off", "--out", tmp_path / "off")
    assert "4 members (4 reused, 0 trained)" in again.stdout.replace("\n", " ") and "stacked" not in again.stdout
    rows = [json.loads((tmp_path / d / "metrics.json").read_text())["rows"] for d in ("on", "off")]
    assert rows[0] == rows[1]


def test_jobs_trains_members_side_by_side_and_says_so(tiny_mnist, tmp_path):
    args = ["ablate", "--lam", "1", "5", "10", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist]
    result = invoke(*args, "--jobs", "2", "--out", tmp_path / "two")
    assert result.exit_code == 0, result.output
    assert "members 1-3/3: 2 at a time, side by side on the CPU" in result.stdout
    rows = [line.split()[:2] for line in result.stdout.splitlines() if line[:3].strip() in {"1", "2", "3"}]
    assert sorted(rows) == [["1", "1"], ["2", "1"], ["3", "1"]]  # an epoch row per member, numbered
    alone = invoke(*args, "--jobs", "1", "--out", tmp_path / "one", "--runs-dir", tmp_path / "alone")
    assert "side by side" not in alone.stdout and "3 members (0 reused, 3 trained)" in alone.stdout.replace("\n", " ")
    rows = [json.loads((tmp_path / d / "metrics.json").read_text())["rows"] for d in ("two", "one")]
    for row in rows[0] + rows[1]:
        del row["train_seconds"]
    assert rows[0] == rows[1]


def test_out_that_is_a_file(tiny_mnist, tmp_path):
    target = tmp_path / "f"
    target.write_text("keep")
    result = invoke("ablate", "--lam", "1", *FAST_ABLATE_ARGS, "--data-dir", tiny_mnist, "--out", target)
    assert result.exit_code == 1 and "is a file" in result.stderr and target.read_text() == "keep"


# --- stacked members keep every guarantee of a lone fit --------------------------------------

STACKED = ["--stack", "on", "--precision", "fp32", "--epochs", "3", "--batch-size", "16"]


def test_a_stacked_member_that_diverges_is_reported_and_the_rest_are_saved(tiny_mnist, tmp_path, monkeypatch):
    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.core import stacked
    from vaecli.store.runs import run_folder
    from vaecli.studies.sweep import Sweep

    real = stacked.member_terms

    def poisoned(out, x, kind):  # member 2 (lam = 5) diverges in its second epoch
        recon, kl = real(out, x, kind)
        if poisoned.calls >= 5:
            recon = recon.clone()
            recon[1] = torch.inf
        poisoned.calls += 1
        return recon, kl

    poisoned.calls = 0
    monkeypatch.setattr(stacked, "member_terms", poisoned)
    out = tmp_path / "sweep"
    result = invoke(
        "ablate", "--lam", "1", "5", "10", *FAST_ABLATE_ARGS, *STACKED, "--data-dir", tiny_mnist, "--out", out
    )
    line = one_line_error(result, "epoch 2", code=1)
    assert line.startswith("error: 1 of 3 members failed (member 2): training diverged")
    assert "member 2 failed" in result.stdout and "(0 reused, 2 trained, 1 failed)" in result.stdout
    base = TrainConfig(model=ModelConfig(hidden_layers=(16,)), epochs=3, batch_size=16, precision="fp32")
    members = Sweep(base, lams=(1.0, 5.0, 10.0)).members()  # what FAST_ABLATE_ARGS + STACKED ask for
    folders = [run_folder(c) for c in members]
    assert [(f / "model.safetensors").is_file() for f in folders] == [True, False, True]
    assert (folders[1] / "resume.safetensors").is_file()  # its last good epoch, to look at or retry
    report = json.loads((out / "metrics.json").read_text())
    assert "failed" in report["members"][1] and report["rows"][1]["failed"] == 1
    assert "## Failed members" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "way", [["--stack", "on"], ["--stack", "off", "--jobs", "1"], ["--stack", "off", "--jobs", "2"]]
)
def test_a_huge_learning_rate_fails_every_member_and_saves_none(tiny_mnist, tmp_path, way):
    """Stacked, one by one or side by side: every member is tried, none is saved, and the sweep exits 1."""
    args = ["--lam", "1", "5", *FAST_ABLATE_ARGS, *STACKED, *way, "--lr", "1e8", "--data-dir", tiny_mnist]
    result = invoke("ablate", *args)
    line = one_line_error(result, code=1)
    assert line.startswith("error: 2 of 2 members failed (members 1-2): training diverged")
    assert not list((tmp_path / "store").glob("*/model.safetensors"))


def test_ctrl_c_stops_a_stacked_sweep_and_the_same_command_continues_bit_for_bit(tiny_mnist, tmp_path):
    from vaecli.store.checkpoint import load_run

    args = ["ablate", "--lam", "1", "5", *FAST_ABLATE_ARGS, *STACKED, "--data-dir", tiny_mnist]
    whole = run_vaecli(*args, "--runs-dir", tmp_path / "whole", "--out", tmp_path / "w")
    assert whole.returncode == 0, whole.stderr
    store = tmp_path / "cut"
    cut = run_vaecli(*args, "--runs-dir", store, "--out", tmp_path / "c", interrupt=(2, 2, 1))
    line = one_line_error(cut, code=130)
    assert "interrupted at epoch 2, step 2" in line and "each of the 2 stacked members saved its state" in line
    folders = sorted(store.iterdir())
    assert len(folders) == 2 and all((f / "resume.safetensors").is_file() for f in folders)
    assert not any((f / "model.safetensors").exists() for f in folders)

    alone = tmp_path / "alone"  # a member's state is a lone run's: `vaecli train --resume` continues it by itself
    shutil.copytree(store, alone)
    resumed = run_vaecli("train", "--resume", alone / folders[0].name, "--data-dir", tiny_mnist)
    assert resumed.returncode == 0 and "Resuming at epoch 2, step 2" in resumed.stdout, resumed.stderr

    again = run_vaecli(*args, "--runs-dir", store, "--out", tmp_path / "c")
    assert again.returncode == 0, again.stderr
    assert "Resuming the stacked members at epoch 2, step 2" in again.stdout and "members 1-2/2 stacked" in again.stdout
    for folder in folders:
        resumed, uncut = load_run(folder), load_run(tmp_path / "whole" / folder.name)
        pairs = zip(resumed.model.state_dict().values(), uncut.model.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_the_metrics_table_cuts_nothing_at_80_columns():
    """Two axes and every metric are wider than 80 columns: headers and numbers break, never end in '…'."""
    from rich.console import Console

    from vaecli.cli.ablate import _metrics_tables

    row = {"H": 2.0, "lam": 40.0, "capacity": 5.0, "capacity epochs": 10.0, "recon": 141.0, "KL": 5.0}
    row |= {"neg_elbo": 146.0, "iw100_nll": 140.98, "active_units": "2/2", "train_seconds": 61.43}
    console = Console(width=80, record=True)
    for table in _metrics_tables([row], 100, 1):
        console.print(table)
    text = console.export_text()
    assert "…" not in text and "141.00" in text and "140.98" in text and "epochs" in text
