"""Every command that draws or scores a model takes a RUN, or the training options that find (or train) it."""

import json

import pytest

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error, write_dataset

DRAWS = {
    "sample": ["--n", "4"],
    "grid": ["--n", "3"],
    "recon": ["--n", "2"],
    "traverse": ["--n", "3"],
    "latent": [],
    "eval": ["--iw-samples", "2"],
    "explore": [],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run store holding the run of FAST_TRAIN_ARGS, and the data it was trained on."""
    root = tmp_path_factory.mktemp("forms")
    data = write_dataset(root / "data" / "MNIST" / "raw").parent.parent
    trained = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", data, "--runs-dir", root / "store", "--quiet")
    assert trained.exit_code == 0, trained.output
    (run,) = (root / "store").iterdir()
    return root, data, run


@pytest.mark.parametrize("command", DRAWS)
def test_a_run_by_its_folder_or_by_its_options(command, store):
    root, data, run = store
    out = ["--out", root / f"{command}.{'html' if command == 'explore' else 'png'}"] if command != "eval" else []
    by_folder = invoke(command, run, *DRAWS[command], "--data-dir", data, *out)
    assert by_folder.exit_code == 0, by_folder.output
    options = [*FAST_TRAIN_ARGS, "--runs-dir", root / "store"]
    by_options = invoke(command, *options, *DRAWS[command], "--data-dir", data, *out)
    assert by_options.exit_code == 0 and f"Using the finished run {run}" in by_options.stdout, by_options.output


def test_a_run_given_twice_is_refused(store):
    root, _, run = store
    one_line_error(invoke("grid", run, "--model", root / "elsewhere"), "give the run once", code=2)


def test_info_and_runs_know_an_ablation_folder(tiny_mnist, tmp_path):
    store = tmp_path / "store"
    where = [*FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", store, "--iw-samples", "2"]
    assert invoke("ablate", "--lam", "1", "2", *where).exit_code == 0
    (folder,) = [p for p in store.iterdir() if p.name.startswith("ablate-")]
    shown = invoke("info", folder)
    assert shown.exit_code == 0 and "compares" in shown.stdout and "lam: 2 settings" in shown.stdout, shown.output
    assert "vaecli ablate --lam 1 2" in shown.stdout.replace("\n", " ")
    listed = invoke("runs", "--runs-dir", store, "--sweeps", "--json")
    assert [a["path"] for a in json.loads(listed.stdout)] == [str(folder)]
    assert json.loads(listed.stdout)[0]["compared"] == ["lam"]
    assert folder.name not in invoke("runs", "--runs-dir", store).stdout  # the runs stay runs
