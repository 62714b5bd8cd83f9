"""The bfloat16 training step written out: forward, backward and the Adam update without autograd.

The arithmetic is autocast's, rounding for rounding: the layers multiply bfloat16
matrices, the loss and its gradient at the logits, mu and logvar are taken in
float32, the weights and Adam's moments stay float32 (the model's parameters), and
every gradient is rounded where autograd rounds it under autocast, so a fit ends
with the same weights, bit for bit. What goes is autocast's overhead, a third of a
step on a 2-core CPU: about 76 casts a step (here the weights go to their bfloat16
working copies, and the gradients back, in one call each), autograd's graph, and
Optimizer.step's Python around the fused Adam kernel. The mu and logvar heads
run forward as one (2H, hidden) matmul."""

from collections.abc import Callable

import torch

from vaecli.core.loss import LossTerms, kl_divergence_grad, reconstruction_nll_grad, vae_loss
from vaecli.core.model import VAE, VAEOutput

_relu_backward = torch.ops.aten.threshold_backward  # grad where the ReLU's output > 0, else 0


class _Layer:
    """A linear layer's bfloat16 working weights and the float32 gradients its backward writes."""

    def __init__(self, n_out: int, n_in: int, device: torch.device) -> None:
        def bf16(*size: int) -> torch.Tensor:
            return torch.empty(*size, dtype=torch.bfloat16, device=device)

        self.weight, self.bias = bf16(n_out, n_in), bf16(n_out)
        # the backward's gradients, copied to the float32 ones that Adam reads
        self.weight_grad16, self.bias_grad16 = bf16(n_out, n_in), bf16(n_out)
        self.weight_grad, self.bias_grad = torch.empty(n_out, n_in, device=device), torch.empty(n_out, device=device)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, h, self.weight.t())

    def backward(self, grad: torch.Tensor, h: torch.Tensor, relu_input: bool) -> torch.Tensor:
        """grad (B, out) at the output and h (B, in) the input -> the gradient at h (at the ReLU's input if h is
        a ReLU's output), with the weights' gradients written as by weight_backward."""
        self.weight_backward(grad, h)
        grad = torch.mm(grad, self.weight)
        return _relu_backward(grad, h, 0) if relu_input else grad

    def weight_backward(self, grad: torch.Tensor, h: torch.Tensor) -> None:
        """Write the weight's and bias's gradients only: for a layer whose input needs none."""
        torch.mm(grad.t(), h, out=self.weight_grad16)
        torch.sum(grad, 0, out=self.bias_grad16)  # as autograd's; a float32 result (dtype=) takes 5x as long


class Bf16Step:
    """(x (B, D), eps (B, H), t) -> (the loss, its (recon, KL, loss) means), the model's weights updated by `optimizer`.

    The plain ELBO only, so the step number t changes nothing.

    `loss` gives the loss's values (the trainer passes its own, which tests may poison).
    `optimizer` is the fused Adam over `model.parameters()`; its state may be replaced
    between calls (a resumed fit loads it), and its first step, which creates that state,
    goes through Optimizer.step.
    """

    def __init__(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        lam: float,
        recon: str,
        loss: Callable[[VAEOutput, torch.Tensor, float, str], LossTerms] = vae_loss,
    ) -> None:
        self.optimizer, self.lam, self.recon, self.loss = optimizer, lam, recon, loss
        self.latent_dim = model.config.latent_dim
        self.params: list[torch.Tensor] = list(model.parameters())
        linears, depth = model.linears(), len(model.config.hidden_layers)
        encoder, decoder = linears[:depth], linears[depth + 2 :]  # between them: mu, logvar
        if self.params != [p for m in (*encoder, model.mu, model.logvar, *decoder) for p in (m.weight, m.bias)]:
            raise ValueError("the model's parameters are not its layers' weights and biases in order")
        device = self.params[0].device
        self.encoder = [_Layer(m.out_features, m.in_features, device) for m in encoder]
        self.decoder = [_Layer(m.out_features, m.in_features, device) for m in decoder]
        h = self.latent_dim
        self.head = _Layer(2 * h, model.mu.in_features, device)  # mu and logvar stacked: (2H, hidden)
        mu_rows, logvar_rows = slice(0, h), slice(h, 2 * h)
        # the parameters' float32 gradients, written by the layers; mu's and logvar's are views of the head's
        for m, a in zip((*encoder, *decoder), (*self.encoder, *self.decoder), strict=True):
            m.weight.grad, m.bias.grad = a.weight_grad, a.bias_grad
        for m, rows in ((model.mu, mu_rows), (model.logvar, logvar_rows)):
            m.weight.grad, m.bias.grad = self.head.weight_grad[rows], self.head.bias_grad[rows]
        self.grads = [g for p in self.params if (g := p.grad) is not None]  # every one, all set just above
        # the bfloat16 working copies, in the parameters' order
        self.working = [t for a in self.encoder for t in (a.weight, a.bias)]
        self.working += [self.head.weight[mu_rows], self.head.bias[mu_rows]]
        self.working += [self.head.weight[logvar_rows], self.head.bias[logvar_rows]]
        self.working += [t for a in self.decoder for t in (a.weight, a.bias)]
        layers = (*self.encoder, self.head, *self.decoder)
        self.grads16 = [t for a in layers for t in (a.weight_grad16, a.bias_grad16)]
        self.grads32 = [t for a in layers for t in (a.weight_grad, a.bias_grad)]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, eps: torch.Tensor, t: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        torch._foreach_copy_(self.working, self.params)  # float32 master weights -> bfloat16 working copies
        # forward: the inputs of every layer are kept for the backward
        h = x.to(torch.bfloat16)
        enc_inputs = [h]
        for layer in self.encoder:
            h = layer.forward(h).relu_()
            enc_inputs.append(h)
        head = self.head.forward(h)  # (B, 2H): mu, logvar
        mu16, logvar16 = head[:, : self.latent_dim], head[:, self.latent_dim :]
        z = VAE.reparameterize(mu16, logvar16, eps=eps)  # float32, as under autocast
        h = z.to(torch.bfloat16)
        dec_inputs = [h]
        for layer in self.decoder[:-1]:
            h = layer.forward(h).relu_()
            dec_inputs.append(h)
        logits16 = self.decoder[-1].forward(h)
        out = VAEOutput(logits16.float(), mu16.float(), logvar16.float(), z)
        terms = self.loss(out, x, self.lam, self.recon)  # its values; the gradients below are written out

        # backward; loss = (recon_sum + lam * kl_sum) / B
        scale = 1.0 / len(x)
        grad = reconstruction_nll_grad(out.logits, x, self.recon, scale)  # (B, D) float32
        for i in reversed(range(len(self.decoder))):
            grad = self.decoder[i].backward(grad.to(torch.bfloat16), dec_inputs[i], relu_input=i > 0)
        dz = grad.float()  # (B, H)
        d_mu, d_logvar = kl_divergence_grad(out.mu, out.logvar, self.lam * scale)
        bf16 = torch.bfloat16
        # z = mu + exp(logvar / 2) * eps, so dz/dlogvar = eps * exp(logvar / 2) / 2; each path's gradient is
        # rounded to bfloat16 and the two summed in bfloat16, as autograd does under autocast
        d_mu16 = dz.to(bf16).add_(d_mu.to(bf16))
        d_logvar16 = (dz * eps).to(bf16).mul_(torch.exp(0.5 * logvar16)).mul_(0.5)
        d_logvar16.add_(d_logvar.to(bf16))
        self.head.weight_backward(torch.cat((d_mu16, d_logvar16), dim=1), enc_inputs[-1])
        if self.encoder:
            # the heads' input gradients apart, summed in bfloat16: autograd's rounding
            w_mu, w_logvar = self.head.weight[: self.latent_dim], self.head.weight[self.latent_dim :]
            grad = torch.mm(d_mu16, w_mu).add_(torch.mm(d_logvar16, w_logvar))
            grad = _relu_backward(grad, enc_inputs[-1], 0)
            for i in reversed(range(1, len(self.encoder))):
                grad = self.encoder[i].backward(grad, enc_inputs[i], relu_input=True)
            self.encoder[0].weight_backward(grad, enc_inputs[0])  # the images need no gradient
        torch._foreach_copy_(self.grads32, self.grads16)
        self._adam()
        return terms.total, torch.stack((terms.recon, terms.kl, terms.total))  # the objective: the total

    def _adam(self) -> None:
        """optimizer.step(), the same arithmetic, without its Python around the fused kernel."""
        group, state = self.optimizer.param_groups[0], self.optimizer.state
        plain = group["fused"] and not (group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay"))
        if not plain or len(state) < len(self.params):
            self.optimizer.step()  # the first step creates Adam's state
            return
        states = [state[p] for p in self.params]
        steps = [s["step"] for s in states]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            self.params,
            self.grads,
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
