"""Which matrix-product kernel a float32 layer on the CPU runs: oneDNN's or torch's own (MKL's).

On the AMD EPYC this was measured on, oneDNN multiplied the default model's wide layers
about twice as fast as MKL, whose build takes a generic path on CPUs that are not Intel's;
MKL stayed ahead on the thin layers next to a small latent (benchmarks/bench_step.py).
The choice depends on the layer's shape only, never on a timing, so that one config
trains to the same weights on every run. The written-out training step (engine/written_step.py)
and the model's forward without autograd (core/model.py: evaluations, figures) both take it.
"""

from collections.abc import Callable

import torch
from torch import nn

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


def inference_kernel(h: torch.Tensor) -> Callable[..., torch.Tensor] | None:
    """onednn_linear's op where `h` goes through layers without autograd, in float32 on the CPU, else None.

    oneDNN's linear has no backward, so a forward that autograd records (or autocast casts) keeps nn.Linear.
    """
    inference = not (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu"))
    return onednn_linear() if inference and h.device.type == "cpu" and h.dtype == torch.float32 else None


def sequential(layers: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """layers(h) for a stack of nn.Linear, each maybe followed by an nn.ReLU: without autograd, in float32 on the
    CPU, the wide ones through oneDNN with the ReLU fused (about 0.65x MKL's time for the test set's evaluation)."""
    onednn = inference_kernel(h)
    if onednn is None:
        return layers(h)
    modules, lead = list(layers), h.shape[:-1]
    h = h.reshape(-1, h.shape[-1])  # (k, B, H) codes, say, as one batch of rows
    for i, module in enumerate(modules):
        if isinstance(module, nn.ReLU):
            continue  # fused into the linear before it
        if not isinstance(module, nn.Linear):
            raise TypeError(f"sequential runs linear layers and ReLUs only, not {type(module).__name__}")
        relu = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
        kernel = onednn if wide(module.in_features, module.out_features) else None
        h = linear(kernel, h, module.weight, module.bias, relu)
    return h.view(*lead, h.shape[-1])
