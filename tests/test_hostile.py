"""Hostile and broken files: each gets one error line naming the file, never a traceback or a hang."""

import json
import struct
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from tests.conftest import invoke, one_line_error, write_dataset
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.loop import train
from vaecli.errors import CheckpointError, DataError
from vaecli.store.checkpoint import MODEL_FILE, RESUME_FILE, load_run, load_state, save_state
from vaecli.store.runs import save_run

CFG = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(8,)), epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    """A valid small checkpoint's bytes."""
    root = tmp_path_factory.mktemp("hostile")
    result = train(CFG, load_dataset("mnist", write_dataset(root / "raw")), device="cpu")
    return (save_run(root / "run", result).path / MODEL_FILE).read_bytes()


def _header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _with_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _forge_offsets(data: bytes) -> bytes:
    header, body = _header(data)
    header["mu.weight"]["data_offsets"] = [0, 2**40]
    return _with_header(header, body)


def _forge_config(data: bytes, **model: object) -> bytes:
    header, body = _header(data)
    config = json.loads(header["__metadata__"]["config"])
    config["model"].update(model)
    header["__metadata__"]["config"] = json.dumps(config)
    return _with_header(header, body)


def _forge_metadata(data: bytes, **entries: str) -> bytes:
    header, body = _header(data)
    header["__metadata__"].update(entries)
    return _with_header(header, body)


def _wrong_dtype(data: bytes) -> bytes:
    header, _ = _header(data)
    tensors = {k: v.half() for k, v in safetensors_load(data).items()}
    return safetensors_bytes(tensors, metadata=header["__metadata__"])


# name -> (how to damage the good bytes, what the error must say)
CHECKPOINT_CASES = {
    "empty file": (lambda b: b"", "not a readable safetensors file"),
    "truncated header": (lambda b: b[:20], "not a readable safetensors file"),
    "truncated body": (lambda b: b[: len(b) - 100], "not a readable safetensors file|cannot read tensors"),
    "header length 2**62": (lambda b: struct.pack("<Q", 2**62) + b[8:], "not a readable safetensors file"),
    "header length past the end": (lambda b: struct.pack("<Q", len(b)) + b[8:], "not a readable safetensors file"),
    "offsets out of range": (_forge_offsets, "not a readable safetensors file|cannot read tensors"),
    "header not JSON": (lambda b: b[:8] + b"\xff" * (len(b) - 8), "not a readable safetensors file"),
    "config forging a huge latent size": (lambda b: _forge_config(b, latent_dim=10**12), "tensor mu.weight"),
    "config forging huge layers": (lambda b: _forge_config(b, hidden_layers=[2**40]), "tensor"),
    "config not JSON": (lambda b: _forge_metadata(b, config="{nope"), "bad config in metadata"),
    "config with unknown keys": (lambda b: _forge_metadata(b, config='{"colour": 1}'), "unknown keys"),
    "not from vaecli": (lambda b: _forge_metadata(b, format="pt"), "not a vaecli checkpoint"),
    "tensors of another dtype": (_wrong_dtype, "F16"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_broken_checkpoints_fail_in_one_line(case, good_bytes, tmp_path):
    damage, message = CHECKPOINT_CASES[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(damage(good_bytes))
    with pytest.raises(CheckpointError, match=message) as info:
        load_run(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    one_line_error(invoke("info", path), str(path), code=1)


@pytest.fixture(scope="module")
def good_resume_bytes(tmp_path_factory):
    """A valid resume file's bytes: the state after the first of two epochs."""
    root = tmp_path_factory.mktemp("hostile-resume")
    states = []
    train(
        replace(CFG, epochs=2),
        load_dataset("mnist", write_dataset(root / "raw")),
        device="cpu",
        save_state=states.append,
    )
    return save_state(root / "run", states[0]).read_bytes()


# name -> (how to damage a good resume file, what the error must say)
RESUME_CASES = {
    "empty file": (lambda b: b"", "not a readable safetensors file"),
    "truncated body": (lambda b: b[: len(b) - 100], "not a readable safetensors file|cannot read tensors"),
    "header length 2**62": (lambda b: struct.pack("<Q", 2**62) + b[8:], "not a readable safetensors file"),
    "progress not JSON": (lambda b: _forge_metadata(b, progress="[1,"), "bad progress in metadata"),
    "progress without its epoch": (lambda b: _forge_metadata(b, progress='{"step": 0}'), "bad progress"),
    "config forging huge layers": (lambda b: _forge_config(b, hidden_layers=[2**40]), "tensor"),
    "tensors of another dtype": (_wrong_dtype, "F16"),
    "a finished model, not a resume file": (lambda b: _forge_metadata(b, format="vaecli"), "not a vaecli resume file"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_broken_resume_files_fail_in_one_line(case, good_resume_bytes, tmp_path):
    damage, message = RESUME_CASES[case]
    path = tmp_path / "run" / RESUME_FILE
    path.parent.mkdir()
    path.write_bytes(damage(good_resume_bytes))
    with pytest.raises(CheckpointError, match=message) as info:
        load_state(path.parent)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    one_line_error(invoke("train", "--resume", path.parent), str(path), code=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_corruption_loads_or_fails_cleanly(good_bytes, tmp_path, data):
    """Flip bytes anywhere, or cut the file anywhere: a clean CheckpointError or a loaded model."""
    corrupted = bytearray(good_bytes)
    n = struct.unpack("<Q", good_bytes[:8])[0]
    # aim most flips at the 8-byte length and the JSON header, where parsing happens
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, min(len(corrupted) - 1, 8 + n + 64)))
        corrupted[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(corrupted))))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(corrupted[:cut]))
    try:
        run = load_run(path)
    except CheckpointError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(run.model.decode(torch.zeros(1, 2)), torch.Tensor)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_idx_corruption_loads_or_fails_cleanly(tmp_path, data):
    raw = write_dataset(tmp_path / f"d{data.draw(st.integers(0, 10**9))}", n_train=16, n_test=8)
    name = data.draw(st.sampled_from(sorted(p.name for p in raw.iterdir())))
    blob = bytearray((raw / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, 15))] = data.draw(st.integers(0, 255))  # header bytes
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    (raw / name).write_bytes(bytes(blob))
    try:
        load_dataset("mnist", raw)
    except DataError as e:
        assert "\n" not in str(e)
