"""core/kernels.py: the model's forward without autograd takes oneDNN's linear for wide float32 layers."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vaecli.config import ModelConfig
from vaecli.core import kernels
from vaecli.core.model import VAE

needs_onednn = pytest.mark.skipif(kernels.onednn_linear() is None, reason="this torch has no oneDNN linear")


def onednn_calls(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")


@needs_onednn
def test_inference_runs_the_wide_layers_through_onednn_and_agrees_with_nn_linear():
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden_layers=(256, 128), latent_dim=3)).eval()
    x, eps = torch.rand(64, 784), torch.randn(64, 3)
    with torch.enable_grad():
        reference = model(x, eps=eps)
    with torch.no_grad():
        fast = model(x, eps=eps)
        # 784 -> 256 and 256 -> 128 in the encoder, 128 -> 256 and 256 -> 784 in the decoder; not the 3-wide ones
        assert onednn_calls(lambda: model(x, eps=eps)) == 4
    for got, want in zip(fast, reference, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        assert onednn_calls(lambda: model.decode(eps)) == 2


def test_a_forward_that_autograd_records_keeps_nn_linear_and_its_gradients():
    model = VAE(ModelConfig(hidden_layers=(256, 128), latent_dim=3))
    x = torch.rand(8, 784)
    assert onednn_calls(lambda: model(x, eps=torch.randn(8, 3))) == 0
    out = model(x, eps=torch.randn(8, 3))
    out.logits.sum().backward()
    assert model.encoder[0].weight.grad is not None


def test_inference_in_another_dtype_or_under_autocast_keeps_nn_linear():
    model = VAE(ModelConfig(hidden_layers=(256, 128), latent_dim=3)).eval()
    x = torch.rand(8, 784)
    with torch.no_grad():
        assert onednn_calls(lambda: model.double()(x.double(), eps=torch.randn(8, 3).double())) == 0
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert onednn_calls(lambda: model(x, eps=torch.randn(8, 3))) == 0


def test_sequential_refuses_a_layer_it_cannot_run():
    layers = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    with torch.no_grad(), pytest.raises(TypeError, match="Tanh"):
        kernels.sequential(layers, torch.rand(2, 4))


@needs_onednn
def test_inference_decodes_codes_of_any_leading_shape():
    model = VAE(ModelConfig(hidden_layers=(256, 128), latent_dim=3)).eval()
    z = torch.randn(5, 7, 3)  # k samples of B images
    with torch.no_grad():
        logits = model.decode(z)
        flat = model.decode(z.view(35, 3))
    assert logits.shape == (5, 7, 784)
    torch.testing.assert_close(logits.view(35, 784), flat, rtol=0, atol=0)
