"""The command line through typer's CliRunner: files written, exit codes, one-line errors."""

import inspect
import json
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN_ARGS, fast_train_args_but, invoke, one_line_error
from vaecli.cli.lists import join_number_lists


def test_train_writes_a_run_folder(tiny_mnist, tmp_path):
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"model.safetensors", "metrics.json", "loss.png", ".lock"}  # .lock: the run's lock file stays
    assert "run saved" in result.stdout and "-ELBO" in result.stdout


def test_train_without_out_uses_the_store_then_reuses(tiny_mnist, tmp_path):
    first = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s")
    assert first.exit_code == 0, first.output
    (folder,) = (tmp_path / "s").iterdir()
    assert folder.name.startswith("h2-lam1-e1-s0-")
    second = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s")
    assert second.exit_code == 0 and "reusing" in second.stdout


def test_json_prints_one_object_per_epoch(tiny_mnist, tmp_path):
    result = invoke("train", *FAST_TRAIN_ARGS, "--epochs", "3", "--lam", "5", "--data-dir", tiny_mnist, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["event"] for r in rows] == ["epoch", "epoch", "epoch", "done"]
    first = rows[0]
    assert first["epoch"] == 1 and first["lam"] == 5.0
    assert first["test_total"] == pytest.approx(first["test_recon"] + 5 * first["test_kl"])
    assert first["test_neg_elbo"] == pytest.approx(first["test_recon"] + first["test_kl"])
    assert rows[-1]["run"].endswith(rows[-1]["run"].split("/")[-1]) and not rows[-1]["reused"]


def test_quiet_prints_nothing(tiny_mnist):
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_table_shows_weighted_columns_only_when_lam_is_not_one(tiny_mnist):
    plain = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist)
    weighted = invoke("train", *FAST_TRAIN_ARGS, "--lam", "10", "--data-dir", tiny_mnist)
    assert "λ·KL" not in plain.stdout and "λ·KL" in weighted.stdout


def test_layers_take_space_or_comma_separated_values():
    assert join_number_lists(["--layers", "512", "256", "--lam", "1"], ("--layers",)) == [
        "--layers",
        "512,256",
        "--lam",
        "1",
    ]
    assert join_number_lists(["--layers", "64,32"], ("--layers",)) == ["--layers", "64,32"]
    assert join_number_lists(["--range", "-3", "3", "x"], ("--range",)) == ["--range", "-3,3", "x"]


def test_version_and_help():
    assert invoke("--version").stdout.strip().startswith("vaecli ")
    result = invoke("train", "--help")
    assert result.exit_code == 0 and "--hidden" in result.stdout


def test_help_paragraphs_wrap_to_the_terminal(monkeypatch):
    """Each paragraph of a command's help is one line on a wide terminal: the source's line breaks are gone."""
    from typer.main import get_command

    from vaecli.cli import app

    monkeypatch.setenv("COLUMNS", "400")
    for name, command in get_command(app).commands.items():
        lines = [line.strip() for line in invoke(name, "--help").stdout.splitlines()]
        for paragraph in inspect.cleandoc(command.callback.__doc__).split("\n\n"):
            assert " ".join(paragraph.split()) in lines, (name, paragraph)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--hidden", "0"], ["--hidden", "vaecli train --help"]),
        (["--lam", "-1"], ["--lam"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--lr", "0"], ["--lr", "must be a finite number > 0"]),
        (["--recon", "laplace"], ["--recon", "laplace"]),
        (["--device", "tpu"], ["--device"]),
        (["--dataset", "cifar"], ["--dataset"]),
        (["--layers", "512", "0"], ["--layers", "at least 1"]),
        (["--layers", "wide"], ["--layers"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_bad_options_give_one_line(args, fragments, tiny_mnist):
    base = fast_train_args_but(args[0])
    one_line_error(invoke("train", *base, "--data-dir", tiny_mnist, *args), *fragments)


def test_unknown_command_gives_one_line():
    one_line_error(invoke("trian"), "trian")


def test_missing_data_folder_says_where_it_looked(tmp_path):
    one_line_error(
        invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tmp_path / "nowhere"), str(tmp_path / "nowhere"), "--data-dir"
    )


def test_broken_data_file_is_named(tiny_mnist):
    bad = tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:1000])
    one_line_error(invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist), str(bad))


def test_out_that_is_a_file_is_left_alone(tiny_mnist, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    one_line_error(invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", target), "is a file")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\x00" * len(b), lambda b: b""])
def test_damaged_checkpoint_in_out_is_reported_and_kept(tiny_mnist, tmp_path, damage):
    out = tmp_path / "run"
    assert invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", out).exit_code == 0
    model = out / "model.safetensors"
    model.write_bytes(damage(model.read_bytes()))
    before = model.read_bytes()
    one_line_error(invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", out), str(model))
    assert model.read_bytes() == before


def test_cuda_when_absent_is_one_line(tiny_mnist):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(invoke("train", *FAST_TRAIN_ARGS[:-2], "--device", "cuda", "--data-dir", tiny_mnist), "no CUDA GPU")


def test_library_example_runs(tiny_mnist, tmp_path, capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "train_in_python.py"
    argv = sys.argv
    sys.argv = [str(script), str(tiny_mnist), "1"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert (tmp_path / "runs" / "from-python" / "model.safetensors").is_file()
    assert "decodes identically: True" in capsys.readouterr().out


def test_info_and_runs(tiny_mnist, tmp_path):
    store = tmp_path / "store"
    assert invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", store, "--lam", "5").exit_code == 0
    (run,) = store.iterdir()
    shown = invoke("info", run)
    assert shown.exit_code == 0 and "lam=5" in shown.stdout and "model.safetensors" in shown.stdout
    data = json.loads(invoke("info", run, "--json").stdout)
    assert data["config"]["lam"] == 5.0 and data["epochs_trained"] == 1
    assert set(data["files"]) == {"model.safetensors", "metrics.json", "loss.png"}
    (store / "half-done").mkdir()
    (store / "half-done" / ".lock").touch()  # what a run killed in its first epoch leaves
    (store / "ablate-lam1-5-e1-0a1b2c3d").mkdir()  # an ablation's folder is no run
    (store / "ablate-lam1-5-e1-0a1b2c3d" / "report.md").write_text("# VAE ablation over lam\n")
    listed = json.loads(invoke("runs", "--runs-dir", store, "--json").stdout)
    assert {Path(e["path"]).name for e in listed} == {run.name, "half-done"}
    assert next(e for e in listed if e["path"] == str(run))["final"]["test_neg_elbo"] > 0
    table = invoke("runs", "--runs-dir", store)
    assert run.name in table.stdout and "unfinished" in table.stdout and "ablate" not in table.stdout
    assert "No runs" in invoke("runs", "--runs-dir", tmp_path / "empty").stdout


def test_runs_shows_the_time_of_today_and_the_date_of_other_days():
    from vaecli.cli.store import _when

    noon = time.mktime((2026, 12, 2, 12, 5, 0, 0, 0, -1))
    assert _when(noon, "2026-12-02") == "12:05" and _when(noon, "2026-12-03") == "2026-12-02"


def test_shell_completion_completes_commands_and_options(tmp_path):
    import os
    import subprocess
    import sys

    script = Path(sys.executable).parent / "vaecli"
    assert script.is_file(), "the vaecli console script is installed with the package"

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_VAECLI_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - 1)
        return subprocess.run([script], env=env, capture_output=True, text=True, check=True).stdout.split()

    assert "train" in complete("vaecli tr")
    assert {"--lam", "--layers"} <= set(complete("vaecli train --la"))


def test_eval_reports_every_metric(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *FAST_TRAIN_ARGS, "--hidden", "3", "--data-dir", tiny_mnist, "--out", out).exit_code == 0
    result = invoke("eval", out, "--iw-samples", "7", "--data-dir", tiny_mnist, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["iw_samples"] == 7 and data["latent_dim"] == 3 and len(data["kl_per_dim"]) == 3
    assert 0 <= data["active_units"] <= 3 and data["iw_nll"] > 0
    assert data["neg_elbo"] == pytest.approx(data["recon"] + data["kl"])
    table = invoke("eval", out, "--iw-samples", "7", "--data-dir", tiny_mnist, "--device", "cpu")
    assert "IW bound on -log p(x), k=7" in table.stdout and "active units" in table.stdout
    one_line_error(invoke("eval", out, "--iw-samples", "0", "--data-dir", tiny_mnist), "--iw-samples")
    one_line_error(invoke("eval", tmp_path / "missing", "--data-dir", tiny_mnist), "no such file")


def test_homework_example_runs_every_task(tiny_mnist, tmp_path, monkeypatch, capsys):
    """examples/homework4.py, the notebook's paired script, runs as a plain script: text out, figures to files."""
    import runpy

    settings = {"HW4_EPOCHS": "1", "HW4_LAYERS": "16", "HW4_OUT": str(tmp_path / "hw"), "HW4_IW_SAMPLES": "3"}
    for name, value in {**settings, "HW4_DEVICE": "cpu", "VAECLI_DATA_DIR": str(tiny_mnist)}.items():
        monkeypatch.setenv(name, value)
    runpy.run_path(str(Path(__file__).parents[1] / "examples" / "homework4.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "settings: 1 epochs, layers 16, device cpu" in out
    assert "Linear(in_features=784, out_features=16" in out and "lam=40: recon" in out  # Tasks 1 and 2
    assert "$$" in out and "| check | left | right |" in out  # Problem 1 as Markdown text, with its checks
    assert "| 50 | 1 |" in out and "| 2 | 40 |" in out  # the tables of Problems 2 and 3
    assert "<IPython" not in out and "<Figure" not in out  # no object reprs where a notebook would render
    assert (tmp_path / "hw" / "problem2" / "samples.png").is_file()
    assert (tmp_path / "hw" / "problem3" / "manifolds.png").is_file()
    assert (tmp_path / "hw" / "problem3" / "grid_lam1.png").is_file()
    assert "![" in (tmp_path / "hw" / "problem3" / "report.md").read_text()


def test_log_lines_are_not_broken_where_stdout_is_not_a_terminal(tiny_mnist, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist)
    (header,) = [line for line in result.stdout.splitlines() if "Training a VAE" in line]
    assert len(header) > 80 and header.endswith("batches per epoch"), header
