import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.loop import train
from vaecli.errors import CheckpointError
from vaecli.store.checkpoint import MODEL_FILE, load_run, read_config
from vaecli.store.runs import save_run


@pytest.fixture
def saved(tiny_mnist, tmp_path):
    cfg = TrainConfig(model=ModelConfig(latent_dim=3, hidden_layers=(32,)), epochs=2, batch_size=16)
    result = train(cfg, load_dataset("mnist", tiny_mnist), device="cpu")
    save_run(tmp_path / "run", result)
    return tmp_path / "run", result


def test_round_trip_gives_identical_outputs(saved):
    folder, result = saved
    assert sorted(p.name for p in folder.iterdir()) == ["loss.png", "metrics.json", MODEL_FILE]
    run = load_run(folder)
    assert run.config == result.config
    assert [r.to_dict() for r in run.history] == [r.to_dict() for r in result.history]
    a, b = result.model.state_dict(), run.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(4, 3)
    assert torch.equal(run.model.decode(z), result.model.decode(z))
    assert not run.model.training


def test_model_file_alone_is_self_describing(saved, tmp_path):
    folder, result = saved
    lone = tmp_path / "shared.safetensors"
    lone.write_bytes((folder / MODEL_FILE).read_bytes())
    run = load_run(lone)
    assert run.config == result.config and run.history == []
    assert read_config(lone) == result.config


def test_no_temp_files_are_left(saved):
    folder, _ = saved
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def _expect_error(path, message):
    with pytest.raises(CheckpointError, match=message) as info:
        load_run(path)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint(saved, tmp_path):
    data = (saved[0] / MODEL_FILE).read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        _expect_error(bad, "not a readable safetensors file|cannot read tensors")


def test_forged_header_length(tmp_path):
    bad = tmp_path / "forged.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    _expect_error(bad, "not a readable safetensors file")


def test_forged_offsets(saved, tmp_path):
    data = (saved[0] / MODEL_FILE).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 10**12]
    raw = json.dumps(header).encode()
    bad = tmp_path / "offsets.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    _expect_error(bad, "not a readable safetensors file|cannot read tensors")


def test_not_a_vaecli_checkpoint(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    _expect_error(other, "not a vaecli checkpoint")
    (tmp_path / "text.safetensors").write_text("hello")
    _expect_error(tmp_path / "text.safetensors", "not a readable safetensors file")


def test_wrong_shapes_or_dtype_for_the_config(saved, tmp_path):
    folder, result = saved
    meta = {"format": "vaecli", "vaecli_version": "0", "config": result.config.to_json()}
    tensors = {k: v.clone() for k, v in result.model.state_dict().items()}
    tensors["mu.weight"] = torch.zeros(5, 32)
    save_file(tensors, str(tmp_path / "shape.safetensors"), metadata=meta)
    _expect_error(tmp_path / "shape.safetensors", r"tensor mu.weight is F32 \[5, 32\]")
    tensors = {k: v.double() for k, v in result.model.state_dict().items()}
    save_file(tensors, str(tmp_path / "dtype.safetensors"), metadata=meta)
    _expect_error(tmp_path / "dtype.safetensors", "F64")
    tensors = dict(result.model.state_dict())
    del tensors["mu.bias"]
    save_file(tensors, str(tmp_path / "missing.safetensors"), metadata=meta)
    _expect_error(tmp_path / "missing.safetensors", "missing")


def test_bad_config_metadata(saved, tmp_path):
    tensors = saved[1].model.state_dict()
    save_file(dict(tensors), str(tmp_path / "c.safetensors"), metadata={"format": "vaecli", "config": "{oops"})
    _expect_error(tmp_path / "c.safetensors", "bad config in metadata")


def test_run_folder_with_a_missing_file(saved):
    folder, _ = saved
    (folder / "metrics.json").unlink()
    _expect_error(folder, "metrics.json: missing")
    (folder / MODEL_FILE).unlink()
    _expect_error(folder, "no model.safetensors")
    _expect_error(folder / "nope", "no such file")


def test_metrics_that_are_not_json(saved):
    folder, _ = saved
    (folder / "metrics.json").write_text("{broken")
    _expect_error(folder, "not a vaecli metrics file")
