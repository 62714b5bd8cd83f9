"""--tensorboard: event files read back with TensorBoard's own reader and its HParams plugin, against metrics.json."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN_ARGS, StopAt, invoke, one_line_error

# TensorBoard's vendored bleach warns on import of its plugins; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:html5lib's sanitizer is deprecated:DeprecationWarning")
SCALAR_TAGS = [f"{split}/{name}" for split in ("train", "test") for name in ("recon", "kl", "neg_elbo", "objective")]


def events(run: Path):
    """The run's TensorBoard events, as TensorBoard reads them (every scalar and image kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    return accumulator.Reload()


def history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def assert_scalars_match(run: Path) -> None:
    """Every epoch of metrics.json once, at step = epoch, with its values (stored as float32)."""
    rows, accumulator = history(run), events(run)
    assert set(SCALAR_TAGS) <= set(accumulator.Tags()["scalars"])
    for tag in SCALAR_TAGS:
        logged = accumulator.Scalars(tag)
        assert [e.step for e in logged] == [row["epoch"] for row in rows], tag
        key = tag.replace("/", "_")
        assert [e.value for e in logged] == pytest.approx([row[key] for row in rows], rel=1e-6, abs=1e-6), tag


def hparams_view(logdir: Path) -> tuple[dict, dict]:
    """What TensorBoard's HParams view shows of `logdir`: (experiment, session groups), from the plugin's backend."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from tensorboard.plugins.scalar import scalars_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    plugins: dict = {}
    context = base_plugin.TBContext(
        logdir=str(logdir),
        multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
        plugin_name_to_instance=plugins,
    )
    plugins["scalars"] = scalars_plugin.ScalarsPlugin(context)
    apps = hparams_plugin.HParamsPlugin(context).get_plugin_apps()

    def post(route: str, body: dict) -> dict:
        response = Client(apps[route], Response).post(route, data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data(as_text=True))

    experiment = post("/experiment", {"experimentName": ""})
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    columns = [{"hparam": h["name"]} for h in experiment["hparamInfos"]]
    columns += [{"metric": m["name"]} for m in experiment["metricInfos"]]
    groups = post(
        "/session_groups",
        {"experimentName": "", "allowedStatuses": statuses, "colParams": columns, "startIndex": 0, "sliceSize": 100},
    )
    return experiment, groups


def sessions(logdir: Path) -> dict[str, dict]:
    """HParams sessions by run folder name: {"hparams": ..., "metrics": {tag: (value, step)}, "status": ...}."""
    _, groups = hparams_view(logdir)
    found = {}
    for group in groups["sessionGroups"]:
        for session in group["sessions"]:
            metrics = {m["name"]["tag"]: (m["value"], m["trainingStep"]) for m in session["metricValues"]}
            found[Path(session["name"]).parent.name] = {
                "hparams": group["hparams"],
                "metrics": metrics,
                "status": session["status"],
            }
    return found


def assert_session_is_the_run(session: dict, run: Path) -> None:
    """The HParams row of `run`: its config's values, and its final epoch's losses as metrics."""
    config = json.loads((run / "metrics.json").read_text())["config"]
    final = history(run)[-1]
    assert session["hparams"]["lam"] == config["lam"]
    assert session["hparams"]["latent_dim"] == config["model"]["latent_dim"]
    assert session["hparams"]["hidden_layers"] == "-".join(map(str, config["model"]["hidden_layers"]))
    assert session["hparams"]["epochs"] == config["epochs"] and session["hparams"]["binarize"] is False
    assert session["status"] == "STATUS_SUCCESS"
    for tag in SCALAR_TAGS:
        value, step = session["metrics"][tag]
        assert step == final["epoch"] and value == pytest.approx(final[tag.replace("/", "_")], rel=1e-6, abs=1e-6)


def test_train_writes_losses_images_and_hparams(tiny_mnist, tmp_path):
    run = tmp_path / "runs" / "tb"
    result = invoke("train", *FAST_TRAIN_ARGS, "--epochs", 11, "--data-dir", tiny_mnist, "--out", run, "--tensorboard")
    assert result.exit_code == 0, result.output
    assert "tensorboard --logdir" in result.output
    assert_scalars_match(run)
    accumulator = events(run)
    for tag, (height, width) in {
        "samples": (8 * 29 - 1,) * 2,
        "reconstructions": (2 * (28 + 1 + 28) + 6, 8 * 29 - 1),
    }.items():
        images = accumulator.Images(tag)
        assert [e.step for e in images] == [2, 4, 6, 8, 10, 11], tag  # every 11 // 5 epochs, and the last
        assert (images[-1].height, images[-1].width) == (height, width), tag
        assert images[-1].encoded_image_string.startswith(b"\x89PNG")
    found = sessions(run.parent)
    assert list(found) == ["tb"]
    assert_session_is_the_run(found["tb"], run)
    files = sorted(p.name for p in run.iterdir() if p.is_file() and p.name != ".lock")  # the run's lock file stays
    assert files == ["loss.png", "metrics.json", "model.safetensors"]
    plain = tmp_path / "plain"  # drawing the images leaves the fit as it is
    assert invoke("train", *FAST_TRAIN_ARGS, "--epochs", 11, "--data-dir", tiny_mnist, "--out", plain).exit_code == 0
    assert [r["test_neg_elbo"] for r in history(plain)] == [r["test_neg_elbo"] for r in history(run)]


def test_a_finished_run_gets_its_events_when_reused(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", *FAST_TRAIN_ARGS, "--epochs", 3, "--data-dir", tiny_mnist, "--out", run).exit_code == 0
    assert not (run / "tensorboard").exists()
    result = invoke("train", *FAST_TRAIN_ARGS, "--epochs", 3, "--data-dir", tiny_mnist, "--out", run, "--tensorboard")
    assert result.exit_code == 0 and "reusing it" in result.output, result.output
    assert_scalars_match(run)
    assert [e.step for e in events(run).Images("samples")] == [3]  # only the final model is there to draw
    assert_session_is_the_run(sessions(tmp_path)["run"], run)
    files = sorted((run / "tensorboard").iterdir())
    again = invoke("train", *FAST_TRAIN_ARGS, "--epochs", 3, "--data-dir", tiny_mnist, "--out", run, "--tensorboard")
    assert again.exit_code == 0
    assert sorted((run / "tensorboard").iterdir()) == files  # written once


@pytest.mark.parametrize("stack", ["off", "on"])
def test_ablate_members_are_sessions_of_the_hparams_view(tiny_mnist, tmp_path, stack):
    """One run per member in the HParams view; stacked or side by side on the CPU's threads."""
    args = ["ablate", "--lam", "1", "5", *FAST_TRAIN_ARGS, "--epochs", 2, "--data-dir", tiny_mnist, "--iw-samples", 2]
    result = invoke(*args, "--stack", stack, "--tensorboard")
    assert result.exit_code == 0, result.output
    store = tmp_path / "store"
    found = sessions(store)
    assert len(found) == 2 and sorted(s["hparams"]["lam"] for s in found.values()) == [1.0, 5.0]
    for name, session in found.items():
        assert_session_is_the_run(session, store / name)
        assert_scalars_match(store / name)
        assert [e.step for e in events(store / name).Images("reconstructions")] == [1, 2]


def test_resumed_fit_logs_every_epoch_once(tiny_mnist):
    """A stopped fit continues in the same folder; what a killed session logged past its saved state is purged."""
    from torch.utils.tensorboard import SummaryWriter

    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.core.data import load_dataset
    from vaecli.engine.interrupt import StopRequest
    from vaecli.engine.observer import Observers
    from vaecli.errors import Interrupted
    from vaecli.store.runs import RunRequest, train_or_reuse
    from vaecli.views.tensorboard import TensorBoardObserver

    config = TrainConfig(model=ModelConfig(hidden_layers=(32, 16)), epochs=4, batch_size=32)
    data = load_dataset("mnist", tiny_mnist)
    request = RunRequest(config, device="cpu")

    def fit(*observers) -> None:
        board = TensorBoardObserver([(config, request.folder)], data.test.images)
        try:
            train_or_reuse(request, data=data, observer=Observers(*observers, board), stop=stop)
        finally:
            board.close()

    stop = StopRequest()
    with pytest.raises(Interrupted):
        fit(StopAt(stop, 3, 1))  # epochs 1 and 2 logged, the state saved in epoch 3
    time.sleep(1.1)  # TensorBoard reads a folder's files in name order, which starts with the second they began
    with SummaryWriter(str(request.folder / "tensorboard")) as killed:  # as a session killed after logging epoch 3
        killed.add_scalar("test/neg_elbo", 1e6, 3)
    time.sleep(1.1)
    stop = StopRequest()
    fit()
    assert_scalars_match(request.folder)
    assert [e.step for e in events(request.folder).Images("samples")] == [1, 2, 3, 4]

    retrained = RunRequest(config, device="cpu", force=True)  # a fresh fit replaces the earlier events
    board = TensorBoardObserver([(config, retrained.folder)], data.test.images)
    train_or_reuse(retrained, data=data, observer=board)
    board.close()
    assert len(list((request.folder / "tensorboard").iterdir())) == 1
    assert_scalars_match(request.folder)


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_missing_tensorboard_is_one_line(tiny_mnist, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    args = ["--lam", "1", "5"] if command == "ablate" else ["--out", tmp_path / "run"]
    result = invoke(command, *FAST_TRAIN_ARGS, *args, "--data-dir", tiny_mnist, "--tensorboard")
    one_line_error(result, "tensorboard", "pip install 'vaecli[tensorboard]'")
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()  # nothing trained


def test_help_does_not_import_tensorboard():
    probe = (
        "import sys\nfrom vaecli.cli import app\n"
        "for command in ([], ['train'], ['ablate']):\n"
        "    try:\n        app(command + ['--help'])\n    except SystemExit:\n        pass\n"
        "print('tensorboard' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "--tensorboard" in out and out.strip().endswith("False"), out


def test_observers_fan_out_every_hook_in_order():
    from vaecli.engine.observer import Observer, Observers

    calls = []

    class Recorder(Observer):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_start(self, config, steps_per_epoch, device) -> None:
            calls.append((self.name, "start"))

        def on_batch(self, epoch: int, step: int) -> None:
            calls.append((self.name, "batch", epoch, step))

        def on_epoch(self, record) -> None:
            calls.append((self.name, "epoch", record))

        def on_resume(self, state) -> None:
            calls.append((self.name, "resume"))

        def on_member_model(self, member, record, model) -> None:
            calls.append((self.name, "model", member))

        def on_member_failed(self, member, error) -> None:
            calls.append((self.name, "failed", member))

        def close(self) -> None:
            calls.append((self.name, "close"))

    both = Observers(Recorder("a"), Recorder("b"), Observer())
    both.on_start(None, 2, "cpu")
    both.on_resume(None)
    both.on_batch(1, 2)
    both.on_member_epoch(1, "record")  # the default on_member_epoch passes the record on to on_epoch
    both.on_member_model(1, "record", None)
    both.on_member_failed(0, None)
    both.close()
    expected = [("start",), ("resume",), ("batch", 1, 2), ("epoch", "record"), ("model", 1), ("failed", 0), ("close",)]
    assert calls == [(name, *call) for call in expected for name in ("a", "b")]
