import pytest

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.loop import train
from vaecli.errors import RunStoreError
from vaecli.store import runs
from vaecli.store.checkpoint import SCORES_FILE, load_run
from vaecli.store.runs import RunRequest, save_run
from vaecli.studies import scores

CFG = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(16,)), lam=10, epochs=1, batch_size=32)


def test_name_shows_the_config_and_its_hash():
    name = runs.run_name(CFG)
    assert name == f"h2-lam10-e1-s0-{CFG.digest()}"
    assert runs.run_name(TrainConfig(lam=0.5, dataset="fashion-mnist")).startswith("fashion-h2-lam0.5-e20-s0-")


def test_store_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VAECLI_RUNS", str(tmp_path / "elsewhere"))
    assert runs.run_folder(CFG) == tmp_path / "elsewhere" / runs.run_name(CFG)
    monkeypatch.delenv("VAECLI_RUNS")
    assert runs.default_store() == runs.Path("runs")


def test_second_call_reuses_and_force_retrains(tiny_mnist):
    first = runs.train_or_reuse(RunRequest(CFG, data_dir=tiny_mnist, device="cpu"))
    assert not first.reused and first.run.path == runs.run_folder(CFG)
    stamp = (first.run.path / "model.safetensors").stat().st_mtime_ns
    second = runs.train_or_reuse(RunRequest(CFG, data_dir=tiny_mnist / "not-even-read", device="cpu"))
    assert second.reused and second.run.config == CFG
    assert (first.run.path / "model.safetensors").stat().st_mtime_ns == stamp
    third = runs.train_or_reuse(RunRequest(CFG, data_dir=tiny_mnist, device="cpu", force=True))
    assert not third.reused


def test_a_different_run_in_out_is_never_overwritten(tiny_mnist, tmp_path):
    out = tmp_path / "mine"
    runs.train_or_reuse(RunRequest(CFG, out=out, data_dir=tiny_mnist, device="cpu"))
    before = (out / "model.safetensors").read_bytes()
    other = TrainConfig(model=CFG.model, lam=1, epochs=1, batch_size=32)
    with pytest.raises(RunStoreError, match="different config"):
        runs.train_or_reuse(RunRequest(other, out=out, data_dir=tiny_mnist, device="cpu"))
    assert (out / "model.safetensors").read_bytes() == before


def test_out_that_is_a_file(tmp_path, tiny_mnist):
    (tmp_path / "file").write_text("precious")
    with pytest.raises(RunStoreError, match="is a file"):
        runs.train_or_reuse(RunRequest(CFG, out=tmp_path / "file", data_dir=tiny_mnist, device="cpu"))
    assert (tmp_path / "file").read_text() == "precious"


def test_scores_are_kept_in_the_run_folder_until_it_is_retrained(tiny_mnist, monkeypatch):
    data = load_dataset("mnist", tiny_mnist)
    config = TrainConfig(model=ModelConfig(hidden_layers=(8,)), epochs=1, batch_size=32)
    run = runs.train_or_reuse(RunRequest(config, device="cpu"), data=data).run
    first = scores.stored_scores(run, data, iw_samples=5)
    assert (run.path / SCORES_FILE).is_file()
    calls = []
    monkeypatch.setattr(scores, "score_run", lambda *a, **k: calls.append(1) or first)
    assert scores.stored_scores(load_run(run.path), data, iw_samples=5) == first and calls == []
    scores.stored_scores(run, data, iw_samples=6)  # another sample count: scored
    assert len(calls) == 1
    save_run(run.path, train(config, data, device="cpu"))  # retrained: the scores are gone
    assert not (run.path / SCORES_FILE).exists()
    lone = run.path.parent / "lone"
    lone.mkdir()
    (lone / "model.safetensors").write_bytes((run.path / "model.safetensors").read_bytes())
    scores.stored_scores(load_run(lone / "model.safetensors"), data, iw_samples=5)
    assert not (lone / SCORES_FILE).exists()  # a lone model file's folder is not written to
