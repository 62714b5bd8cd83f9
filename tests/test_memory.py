"""Out of memory is one line: the estimate before a fit, and an allocation failure during one."""

import pytest
import torch

from tests.conftest import FAST_TRAIN_ARGS, fast_train_args_but, invoke, one_line_error
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.model import VAE
from vaecli.engine import memory
from vaecli.errors import OutOfMemory

CPU = torch.device("cpu")
MB = 1e6
ALLOCATOR = "DefaultCPUAllocator: not enough memory: you tried to allocate 102400000000 bytes."


def config(latent_dim: int = 2, layers: tuple[int, ...] = (512, 256), **train) -> TrainConfig:
    return TrainConfig(model=ModelConfig(latent_dim=latent_dim, hidden_layers=layers), precision="fp32", **train)


def total(c: TrainConfig, **kwargs) -> int:
    return sum(memory.estimate(c, CPU, **kwargs).values())


@pytest.mark.parametrize(
    "model", [ModelConfig(), ModelConfig(latent_dim=7, hidden_layers=(30,)), ModelConfig(hidden_layers=())]
)
def test_parameter_count_is_the_models(model):
    with torch.device("meta"):
        assert memory.parameter_count(model) == sum(p.numel() for p in VAE(model).parameters())


def test_default_estimate_is_sane():
    parts = memory.estimate(config(), CPU)
    assert 10 * MB < sum(parts.values()) < 200 * MB, parts
    # 1.07 M float32 parameters, rounded up by half
    assert parts["weights"] == pytest.approx(1.5 * 4 * memory.parameter_count(ModelConfig()), abs=1)
    assert parts["Adam state"] == 2 * parts["weights"] and "data" not in parts  # on the CPU the data are loaded


def test_estimate_grows_with_the_model_and_the_batch():
    base = total(config())
    assert total(config(latent_dim=50)) > base
    assert total(config(layers=(512, 256, 128))) > base
    # doubling both layers doubles the 784-wide ends' weights and quadruples the 512 x 256 ones
    wide = memory.estimate(config(layers=(1024, 512)), CPU)["weights"]
    assert 2 < wide / memory.estimate(config(), CPU)["weights"] < 4
    assert memory.estimate(config(batch_size=256), CPU)["activations"] == pytest.approx(
        2 * memory.estimate(config(), CPU)["activations"], rel=1e-6
    )
    assert total(config(), members=4) == pytest.approx(4 * base, rel=1e-6)
    assert "bf16 copies" in memory.estimate(TrainConfig(precision="bf16"), CPU)


def test_data_count_on_a_gpu_only():
    gpu = memory.estimate(config(), torch.device("cuda"), n_images=70_000, pixels=784)
    assert gpu["data"] == pytest.approx(1.5 * 70_000 * (4 * 784 + 8), abs=1) and "resume state" not in gpu
    assert "data" not in memory.estimate(config(), CPU, n_images=70_000, pixels=784)


def test_the_cpu_says_how_much_is_available():
    free = memory.available(CPU)
    assert free is None or free > 0


def test_check_fits_names_the_biggest_parts(monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: 21_500_000_000)
    memory.check_fits([config()], CPU, 96, 784)  # fits
    with pytest.raises(OutOfMemory) as caught:
        memory.check_fits([config(layers=(100_000, 100_000))], CPU, 96, 784)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("this model needs about ")
    assert "resume state" in message and "Adam state" in message and "the CPU has 21.5 GB available" in message
    assert message.endswith("use a smaller `latent_dim` or `hidden_layers`, or a smaller `batch_size`")
    with pytest.raises(OutOfMemory, match="these 3 stacked models need .* `stack` off"):
        memory.check_fits([config(latent_dim=h, layers=(100_000, 100_000)) for h in (2, 5, 10)], CPU, 96, 784)


def test_unknown_free_memory_skips_the_check(monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: None)
    memory.check_fits([config(latent_dim=100_000_000)], CPU, 96, 784)


@pytest.mark.parametrize(
    "error, fragments",
    [
        (RuntimeError(ALLOCATOR), ["on the CPU", "102.4 GB"]),
        (MemoryError(), ["on the CPU"]),
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has"),
            ["GPU", "20.00 GiB"],
        ),
    ],
)
def test_allocation_failures_become_one_line(error, fragments):
    with pytest.raises(OutOfMemory) as caught, memory.one_line_oom():
        raise error
    message = str(caught.value)
    assert message.startswith("training ran out of memory") and "`batch_size`" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for fragment in fragments:
        assert fragment in message


def test_other_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape mismatch"), memory.one_line_oom():
        raise RuntimeError("shape mismatch")


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built: the estimate should have refused first")


@pytest.mark.parametrize("args", [["--hidden", "100000000"], ["--layers", "100000", "100000"]])
def test_train_too_large_is_refused_before_allocating(args, tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr("vaecli.engine.steps.build_model", _no_model)
    base = fast_train_args_but(*(a for a in args if a.startswith("--")))
    result = invoke("train", *base, *args, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s")
    one_line_error(result, "this model needs about", "available", "--hidden or --layers", code=1)
    assert not list(tmp_path.glob("s/**/model.safetensors"))


def test_allocation_failure_in_the_loop_is_one_line(tiny_mnist, tmp_path, monkeypatch):
    def fail(self, xs, eps, t):
        raise RuntimeError(ALLOCATOR)

    monkeypatch.setattr("vaecli.engine.steps.OneModel.step", fail)
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s")
    one_line_error(result, "training ran out of memory on the CPU", "102.4 GB", "--batch-size", code=1)
    assert not list(tmp_path.glob("s/**/model.safetensors"))


def test_ablate_too_large_is_one_line(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr("vaecli.engine.steps.build_model", _no_model)
    args = ["--layers", "16", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--iw-samples", "4"]
    result = invoke("ablate", "--hidden", "100000000", "2", "--stack", "on", *args, "--data-dir", tiny_mnist)
    one_line_error(result, "these 2 stacked models need about", "--stack off", code=1)


def test_on_a_gpu_the_resume_state_must_fit_the_host(monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: 10**15 if device.type == "cuda" else 10**9)
    with pytest.raises(OutOfMemory, match=r"\(resume state .*\) but the CPU has 1.0 GB available"):
        memory.check_fits([config(layers=(100_000, 100_000))], torch.device("cuda"), 96, 784)
