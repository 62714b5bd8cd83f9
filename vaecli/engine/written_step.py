"""The training step written out: forward, backward and the Adam update without autograd, in float32 or bfloat16.

The arithmetic is autograd's, product for product: the layers multiply matrices in
the step's working dtype, the objective and its gradients at the logits, mu, logvar
and z are taken in float32 (core/loss.objective_grads), the weights and Adam's moments
stay float32 (the model's parameters). In bfloat16 every gradient is rounded where
autograd rounds it under autocast, so a fit ends with autocast's weights bit for bit;
in float32 the layers work on the parameters themselves and write their gradients
where Adam reads them. What goes is autograd's graph, Optimizer.step's Python around
the fused Adam kernel and, in bfloat16, autocast's casts: about 76 a step, here one
call each way for all the weights and all the gradients. The mu and logvar heads run
forward as one (2H, hidden) matmul in bfloat16.
"""

from collections.abc import Callable

import torch
from torch import nn

from vaecli.config import TrainConfig
from vaecli.core import kernels, loss
from vaecli.core.model import VAE, VAEOutput

_relu_backward = torch.ops.aten.threshold_backward  # grad where the ReLU's output > 0, else 0


class _Layer:
    """A linear layer's working weights and the gradients its backward writes, both in the step's dtype.

    `onednn`: the layer's products go through oneDNN's linear (core/kernels.py), else torch.addmm and torch.mm.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        weight_grad: torch.Tensor,
        bias_grad: torch.Tensor,
        onednn: Callable[..., torch.Tensor] | None = None,
    ):
        self.weight, self.bias, self.weight_grad, self.bias_grad = weight, bias, weight_grad, bias_grad
        self.onednn = onednn

    def forward(self, h: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """h (B, in) -> h W^T + b (B, out), through a ReLU if `relu`."""
        return kernels.linear(self.onednn, h, self.weight, self.bias, relu)

    def backward(self, grad: torch.Tensor, h: torch.Tensor, relu_input: bool) -> torch.Tensor:
        """grad (B, out) at the output and h (B, in) the input -> the gradient at h (at the ReLU's input if h is
        a ReLU's output), with the weights' gradients written as by weight_backward."""
        self.weight_backward(grad, h)
        if self.onednn is not None:
            grad = self.onednn(grad, self.weight.t(), None, "none", [], "")  # grad W, as grad (W^T)^T
        else:
            grad = torch.mm(grad, self.weight)
        return _relu_backward(grad, h, 0) if relu_input else grad

    def weight_backward(self, grad: torch.Tensor, h: torch.Tensor) -> None:
        """Write the weight's and bias's gradients only: for a layer whose input needs none."""
        if self.onednn is not None:
            # grad^T h as a new tensor, which becomes the parameter's .grad (a oneDNN layer's weight is the
            # float32 parameter itself): no copy into the old one
            self.weight_grad = self.weight.grad = self.onednn(grad.t(), h.t(), None, "none", [], "")
        else:
            torch.mm(grad.t(), h, out=self.weight_grad)
        torch.sum(grad, 0, out=self.bias_grad)  # as autograd's; a float32 result (dtype=) takes 5x as long


Schedule = Callable[[int], tuple[float, float]]


class WrittenStep:
    """(x (B, D), eps, global step t) -> (the loss, its (recon, KL, objective) means), the model updated by Adam.

    eps is (B, H), or (k, B, H) for the importance-weighted bound. `weights(t)` gives step t's KL
    weight and capacity (steps.schedule). `optimizer` is the fused Adam over `model.parameters()`;
    its state may be replaced between calls (a resumed fit loads it), and its first step, which
    creates that state, goes through Optimizer.step. The objective's values come from
    core/loss.objective_grads, looked up at each call (so that a test may poison the loss).
    """

    dtype: torch.dtype  # the layers' working dtype
    # mu and logvar as one (2H, hidden) layer, forward and for the weights' gradients: a matmul's set-up less
    # twice in bfloat16, where it rounds as the two; in float32 one product's sums round otherwise than two's
    fused_head: bool

    def __init__(self, model: VAE, optimizer: torch.optim.Optimizer, config: TrainConfig, weights: Schedule) -> None:
        self.optimizer, self.config, self.weights = optimizer, config, weights
        # float32 on the CPU: the wide layers through oneDNN (core/kernels.py); bfloat16 goes there anyway
        on_cpu = model.mu.weight.device.type == "cpu"
        self.onednn = kernels.onednn_linear() if self.dtype == torch.float32 and on_cpu else None
        self.latent_dim = model.config.latent_dim
        self.params: list[torch.Tensor] = list(model.parameters())
        linears, depth = model.linears(), len(model.config.hidden_layers)
        encoder, decoder = linears[:depth], linears[depth + 2 :]  # between them: mu, logvar
        if self.params != [p for m in (*encoder, model.mu, model.logvar, *decoder) for p in (m.weight, m.bias)]:
            raise ValueError("the model's parameters are not its layers' weights and biases in order")
        # (working copies, parameters) copied before a step; (parameters' .grad, the layers' gradients) after it
        self.to_working: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self.to_master: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self.encoder = [self._layer(m) for m in encoder]
        self.head: _Layer | None = None  # mu and logvar stacked, (2H, hidden), where they run forward as one
        if self.fused_head:
            self.head = head = self._layer(model.mu, model.logvar)
            self.heads = [
                _Layer(head.weight[rows], head.bias[rows], head.weight_grad[rows], head.bias_grad[rows])
                for rows in (slice(0, self.latent_dim), slice(self.latent_dim, None))
            ]  # its mu and logvar rows
        else:
            self.heads = [self._layer(model.mu), self._layer(model.logvar)]
        self.decoder = [self._layer(m) for m in decoder]

    def _layer(self, *modules: nn.Linear) -> _Layer:
        """The working layer of `modules`, stacked by rows; each module's .grad is set to where Adam reads it.

        float32 and one module: the parameters are the working weights and the layer writes their .grad.
        Otherwise the working weights are copies in the step's dtype, and the float32 gradients too.
        """
        if self.dtype == torch.float32 and len(modules) == 1:
            (m,) = modules
            m.weight.grad, m.bias.grad = torch.empty_like(m.weight), torch.empty_like(m.bias)
            onednn = self.onednn if kernels.wide(m.in_features, m.out_features) else None
            return _Layer(m.weight, m.bias, m.weight.grad, m.bias.grad, onednn)
        n_out, n_in, device = sum(m.out_features for m in modules), modules[0].in_features, modules[0].weight.device

        def new(*size: int, dtype: torch.dtype = self.dtype) -> torch.Tensor:
            return torch.empty(*size, dtype=dtype, device=device)

        layer = _Layer(new(n_out, n_in), new(n_out), new(n_out, n_in), new(n_out))
        weight_grad, bias_grad = layer.weight_grad, layer.bias_grad
        if self.dtype != torch.float32:
            weight_grad, bias_grad = new(n_out, n_in, dtype=torch.float32), new(n_out, dtype=torch.float32)
            self.to_master[0].extend((weight_grad, bias_grad))
            self.to_master[1].extend((layer.weight_grad, layer.bias_grad))
        start = 0
        for m in modules:
            rows = slice(start, start + m.out_features)
            start = rows.stop
            m.weight.grad, m.bias.grad = weight_grad[rows], bias_grad[rows]
            self.to_working[0].extend((layer.weight[rows], layer.bias[rows]))
            self.to_working[1].extend((m.weight, m.bias))
        return layer

    def __call__(self, x: torch.Tensor, eps: torch.Tensor, t: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        lam, capacity = self.weights(t)
        terms = self.gradients(x, eps, lam, capacity)
        self.adam()
        return terms.loss, torch.stack((terms.recon, terms.kl, terms.loss))

    def adam(self) -> None:
        """optimizer.step() with the gradients the step wrote, through fused_adam."""
        # every one set by _layer; a oneDNN layer's weight gets a new one each step
        grads = [g for p in self.params if (g := p.grad) is not None]
        fused_adam(self.optimizer, self.params, grads)

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, eps: torch.Tensor, lam: float, capacity: float) -> loss.ObjectiveTerms:
        """The objective's terms at (x, eps), its gradients written where Adam reads them."""
        dtype, latent_dim = self.dtype, self.latent_dim
        if self.to_working[0]:
            torch._foreach_copy_(*self.to_working)  # float32 master weights -> the working copies
        # forward: the inputs of every layer are kept for the backward
        h = x.to(dtype)
        enc_inputs = [h]
        for layer in self.encoder:
            h = layer.forward(h, relu=True)
            enc_inputs.append(h)
        if self.head is not None:
            head = self.head.forward(h)  # (B, 2H): mu, logvar
            mu_w, logvar_w = head[:, :latent_dim], head[:, latent_dim:]
        else:
            mu_w, logvar_w = (layer.forward(h) for layer in self.heads)
        z = VAE.reparameterize(mu_w, logvar_w, eps=eps)  # float32 (as under autocast), shaped like eps
        h = z.to(dtype).flatten(0, -2)  # (k B, H): the k samples of every image decoded as one batch
        dec_inputs = [h]
        for layer in self.decoder[:-1]:
            h = layer.forward(h, relu=True)
            dec_inputs.append(h)
        logits = self.decoder[-1].forward(h).view(*z.shape[:-1], -1)
        out = VAEOutput(logits.float(), mu_w.float(), logvar_w.float(), z)
        terms, grads = loss.objective_grads(self.config, out, x, eps, lam, capacity)

        # backward
        grad = grads.logits.flatten(0, -2)
        for i in reversed(range(len(self.decoder))):
            grad = self.decoder[i].backward(grad.to(dtype), dec_inputs[i], relu_input=i > 0)
        dz = grad.float().view(z.shape)  # (k, B, H) or (B, H)
        if grads.z is not None:
            dz.add_(grads.z)
        # z = mu + exp(logvar / 2) * eps, so dz/dlogvar = eps * exp(logvar / 2) / 2; each path's gradient is
        # summed over the k samples, rounded to the working dtype and the paths summed there, as autograd does
        # under autocast (in float32 the roundings are no-ops)
        d_logvar = dz * eps
        if dz.dim() == 3:
            dz, d_logvar = dz.sum(0), d_logvar.sum(0)
        d_logvar = d_logvar.to(dtype).mul_(torch.exp(0.5 * logvar_w)).mul_(0.5).add_(grads.logvar.to(dtype))
        d_mu = dz.to(dtype)
        if grads.mu is not None:
            d_mu.add_(grads.mu.to(dtype))
        mu_head, logvar_head = self.heads
        if self.head is not None:
            self.head.weight_backward(torch.cat((d_mu, d_logvar), dim=1), enc_inputs[-1])
        else:
            mu_head.weight_backward(d_mu, enc_inputs[-1])
            logvar_head.weight_backward(d_logvar, enc_inputs[-1])
        if self.encoder:
            # the heads' input gradients apart, then summed: autograd's rounding
            grad = torch.mm(d_mu, mu_head.weight).add_(torch.mm(d_logvar, logvar_head.weight))
            grad = _relu_backward(grad, enc_inputs[-1], 0)
            for i in reversed(range(1, len(self.encoder))):
                grad = self.encoder[i].backward(grad, enc_inputs[i], relu_input=True)
            self.encoder[0].weight_backward(grad, enc_inputs[0])  # the images need no gradient
        if self.to_master[0]:
            torch._foreach_copy_(*self.to_master)
        return terms


def fused_adam(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """optimizer.step() for `params` (all of its one group's) with `grads`: the same arithmetic, without its
    Python around the fused kernel."""
    group, state = optimizer.param_groups[0], optimizer.state
    plain = group["fused"] and not (group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay"))
    if not plain or len(state) < len(params):
        optimizer.step()  # the first step creates Adam's state
        return
    states = [state[p] for p in params]
    steps = [s["step"] for s in states]
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(
        params,
        grads,
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
    )


class Fp32Step(WrittenStep):
    """The written-out step in float32: the fp32 CPU's (AVX2 laptops')."""

    dtype = torch.float32
    fused_head = False


class Bf16Step(WrittenStep):
    """The written-out step in bfloat16 with float32 master weights: autocast's arithmetic, rounding for rounding."""

    dtype = torch.bfloat16
    fused_head = True
