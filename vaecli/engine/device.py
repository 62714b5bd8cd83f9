"""Which device a fit runs on and in which arithmetic: 'auto' resolved once, before training."""

import torch

from vaecli.choices import DEVICES
from vaecli.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; a named device must exist."""
    if name not in DEVICES:
        raise ConfigError(f"`device` must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`device` cuda asked for, but PyTorch sees no CUDA GPU; use `device` cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("`device` mps asked for, but this PyTorch has no Apple MPS support; use `device` cpu")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively, so that bf16 autocast pays.

    CPUs: AVX512-BF16 or AMX through oneDNN (about 4x the fp32 matmul rate on a 2-core
    Zen 5); without them bfloat16 is emulated and slower than fp32. GPUs: Ampere and later.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        # private but stable since torch 2.1; a torch without them gets fp32
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where bfloat16 is fast on `device`, else 'fp32'; other names stay."""
    if name != "auto":
        return name
    return "bf16" if fast_bf16(device) else "fp32"
