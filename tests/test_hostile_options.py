"""Hostile command lines and run-store files that used to crash or mislead: each now gets one clear line."""

import json
import shutil

import pytest

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error
from vaecli.store.checkpoint import METRICS_FILE, RESUME_FILE


@pytest.fixture
def trained(tiny_mnist, tmp_path):
    """A finished tiny run's folder."""
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--hidden", "2", "--hidden", "10"], "--hidden: given twice: give all its values after one --hidden"),
        (["-H", "2", "--hidden", "10"], "given twice"),
        (["--hidden", "2", "x", "10"], "--hidden: expected numbers, got 'x'"),
        (["--lam", "1", "--free-bits", "0", "nan?"], "--free-bits: expected numbers, got 'nan?'"),
    ],
)
def test_a_list_given_twice_or_with_a_word_names_the_option(args, fragment):
    one_line_error(invoke("ablate", *args), fragment, code=2)


def test_train_refuses_its_layers_twice():
    one_line_error(invoke("train", "--layers", "512", "--layers", "256"), "--layers: given twice", code=2)


def test_a_file_is_no_run_store(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    one_line_error(invoke("runs", "--runs-dir", tmp_path / "passwd"), "is a file, not a run store", "--runs-dir")


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: d | {"train_seconds": "fast"}, "'train_seconds' must be a number, got 'fast'"),
        (lambda d: {k: v for k, v in d.items() if k != "history"}, "no list of epochs under 'history'"),
        (lambda d: d | {"history": [d["history"][0] | {"test_recon": "12"}]}, "'test_recon' must be a number"),
        (lambda d: d | {"device": 3}, "'device' must be a string"),
    ],
)
def test_info_on_a_run_with_a_damaged_metrics_file_says_what_is_wrong(trained, damage, fragment):
    path = trained / METRICS_FILE
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    one_line_error(invoke("info", trained), str(path), fragment)


def test_a_truncated_resume_state_says_force_starts_over(tiny_mnist, trained, tmp_path):
    out = tmp_path / "broken"
    shutil.copytree(trained, out)
    (out / "model.safetensors").unlink()
    (out / RESUME_FILE).write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"truncated')
    args = ["train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", out]
    one_line_error(invoke(*args), str(out / RESUME_FILE), "add --force to start this run over")
    again = invoke(*args, "--force", "--quiet")
    assert again.exit_code == 0 and (out / "model.safetensors").is_file(), again.output
