"""Whether a fit fits in memory: estimated from the config before anything is allocated.

A model too large for the machine should fail in one line, at once, not in
PyTorch's allocator minutes later with a long traceback. `check_fits` compares
an estimate, counted from the layer sizes (nothing is built), with the memory
the device has free; `one_line_oom` turns an allocation failure the estimate
did not foresee into the same kind of one line.
"""

import contextlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.errors import OutOfMemory

MARGIN = 1.5  # every part rounded up by half: allocator slack, caches and the temporaries not counted here
TRAIN_COPIES = 4  # per layer output: the forward's, the backward's gradient, and the loss's temporaries
EVAL_BATCH = 2000  # images per evaluation batch: engine/records.evaluate's default
HINT = "use a smaller `latent_dim` or `hidden_layers`, or a smaller `batch_size`"
# what PyTorch's allocators say when they fail (CPU: c10's DefaultCPUAllocator; CUDA and MPS: "out of memory")
_OOM_WORDS = ("can't allocate memory", "not enough memory", "out of memory")


def linear_shapes(model: ModelConfig) -> list[tuple[int, int]]:
    """(n_in, n_out) of every linear layer of VAE(model), in core/model.py's order."""
    widths = [model.input_dim, *model.hidden_layers]
    back = [model.latent_dim, *reversed(model.hidden_layers)]
    encoder = list(zip(widths, widths[1:], strict=False))
    heads = [(widths[-1], model.latent_dim)] * 2  # mu and logvar
    decoder = [*zip(back, back[1:], strict=False), (back[-1], model.input_dim)]
    return encoder + heads + decoder


def parameter_count(model: ModelConfig) -> int:
    """Weights and biases of VAE(model), counted from the sizes."""
    return sum(n_in * n_out + n_out for n_in, n_out in linear_shapes(model))


def estimate(
    config: TrainConfig,
    device: torch.device,
    members: int = 1,
    n_images: int = 0,
    pixels: int = 0,
    precision: str | None = None,
    data_bytes: int | None = None,
) -> dict[str, int]:
    """Bytes that a fit of `members` stacked models of `config` needs on `device`, by part, margin included.

    precision: the fit's arithmetic as the engine resolved it (None: the config's, where "auto" counts
    the bf16 copies, so the estimate errs high).

    n_images, pixels: the data set's (train and test) images, which move to the
    device; on the CPU they are already loaded, so not counted. `data_bytes`: what
    they take as stored (core/images.py), by default as float32 with int64 labels. The resume state
    (weights and Adam, copied to the CPU at every epoch) is counted only on the
    CPU; on a GPU it is host memory, see `host_estimate`.
    """
    weights = 4 * parameter_count(config.model)  # float32
    outputs = sum(n_out for _, n_out in linear_shapes(config.model))
    width = config.model.input_dim + 2 * config.model.latent_dim + outputs  # x, eps, z and every layer's output
    train = TRAIN_COPIES * 4 * config.batch_size * width * members
    evaluate = 4 * min(EVAL_BATCH, n_images) * width  # one member at a time, without autograd
    parts = {
        "weights": weights * members,
        "gradients": weights * members,
        "Adam state": 2 * weights * members,  # its two moments
        "activations": max(train, evaluate),  # the two never live at once
    }
    if (precision or config.precision) in ("bf16", "auto"):
        # bfloat16 copies of the weights and of their gradients (engine/written_step.py; autocast caches the former)
        parts["bf16 copies"] = weights * members
    if device.type == "cpu":
        parts["resume state"] = _resume_state(config, members)
    else:
        parts["data"] = n_images * (4 * pixels + 8) if data_bytes is None else data_bytes
    return {name: math.ceil(MARGIN * size) for name, size in parts.items()}


def _resume_state(config: TrainConfig, members: int) -> int:
    return 3 * 4 * parameter_count(config.model) * members  # each member's weights and Adam's two moments, float32


def host_estimate(config: TrainConfig, members: int = 1) -> int:
    """Bytes of the CPU copy of the resume state written at each epoch, margin included."""
    return math.ceil(MARGIN * _resume_state(config, members))


def available(device: torch.device) -> int | None:
    """Bytes free for a fit on `device`, or None where that cannot be told (then nothing is checked)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks that PyTorch's caching allocator holds but no tensor uses are free to this process
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages, without the page cache
    return None


def size_text(n: float) -> str:
    """412300000000 -> '412.3 GB' (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} TB"


def _refusal(what: str, parts: dict[str, int], where: str, free: int, hint: str) -> OutOfMemory:
    top = sorted(parts.items(), key=lambda part: -part[1])[:3]
    listed = ", ".join(f"{name} {size_text(size)}" for name, size in top if size)
    return OutOfMemory(
        f"{what} about {size_text(sum(parts.values()))} to train ({listed}) "
        f"but the {where} has {size_text(free)} available; {hint}"
    )


def check_fits(
    configs: Sequence[TrainConfig],
    device: torch.device,
    n_images: int,
    pixels: int,
    precision: str | None = None,
    data_bytes: int | None = None,
) -> None:
    """Raise OutOfMemory when the estimate of fitting `configs` (stacked when several) exceeds what `device` has."""
    members = len(configs)
    config = max(configs, key=lambda c: c.model.latent_dim)  # a stack pads every latent to the largest
    what = "this model needs" if members == 1 else f"these {members} stacked models need"
    hint = HINT if members == 1 else f"{HINT}, or `stack` off"
    parts = estimate(config, device, members, n_images, pixels, precision, data_bytes)
    free = available(device)
    if free is not None and sum(parts.values()) > free:
        raise _refusal(what, parts, "CPU" if device.type == "cpu" else "GPU", free, hint)
    if device.type != "cpu":  # the resume state is copied to the host
        host, free = {"resume state": host_estimate(config, members)}, available(torch.device("cpu"))
        if free is not None and host["resume state"] > free:
            raise _refusal(what, host, "CPU", free, hint)


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in text for words in _OOM_WORDS)


@contextlib.contextmanager
def one_line_oom() -> Iterator[None]:
    """Turn an allocation failure inside into OutOfMemory, one line with the hint (also as a decorator)."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not _is_oom(e):
            raise
        text = str(e)
        gpu = isinstance(e, torch.cuda.OutOfMemoryError) or "cuda" in text.lower() or "mps" in text.lower()
        where = "GPU" if gpu else "CPU"
        size = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)
        asked = re.search(r"tried to allocate ([\d.]+ [KMGT]i?B)", text, re.IGNORECASE)
        amount = size_text(int(size[1])) if size else asked[1] if asked else None
        detail = f" (it could not allocate {amount} more)" if amount else ""
        raise OutOfMemory(f"training ran out of memory on the {where}{detail}; {HINT}") from None
