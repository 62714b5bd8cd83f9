"""Which matrix-product kernel a float32 layer on the CPU runs: oneDNN's or torch's own (MKL's).

On the AMD EPYC this was measured on, oneDNN multiplied the default model's wide layers
about twice as fast as MKL, whose build takes a generic path on CPUs that are not Intel's;
MKL stayed ahead on the thin layers next to a small latent (benchmarks/bench_step.py).
The choice depends on the layer's shape only, never on a timing, so that one config
trains to the same weights on every run.
"""

from collections.abc import Callable

import torch

WIDE = 128  # a layer whose inputs and outputs both number at least this many multiplies through oneDNN


def onednn_linear() -> Callable[..., torch.Tensor] | None:
    """oneDNN's linear layer with a fused ReLU, where this torch has it (a private op; inductor's CPU code calls it).

    (x, weight, bias or None, "relu" | "none", [], "") -> x @ weight^T + bias, through the ReLU if asked.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def wide(in_features: int, out_features: int) -> bool:
    """Whether a float32 layer of this shape multiplies through oneDNN, where it is there."""
    return min(in_features, out_features) >= WIDE


def linear(
    onednn: Callable[..., torch.Tensor] | None, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, relu: bool
) -> torch.Tensor:
    """h (rows, in) -> h W^T + b (rows, out), through a ReLU if `relu`: by `onednn` (onednn_linear's op), or by
    torch.addmm where it is None."""
    if onednn is not None:
        return onednn(h, weight, bias, "relu" if relu else "none", [], "")
    out = torch.addmm(bias, h, weight.t())
    return out.relu_() if relu else out
