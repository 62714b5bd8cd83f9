"""What the loop trains: one VAE or a stack of them, each with its optimizer and its training step.

Both kinds answer the same questions, so engine/loop.py has one epoch loop for
either: step (xs, eps) -> each member's loss and (recon, KL) means, member m as
a plain VAE (to evaluate and save), and member m's weights and Adam state in the
form of a lone fit's (to save and resume, stacked or alone).

Steps: the written-out float32 or bfloat16 step on the CPU (engine/written_step.py),
autograd through the loss off the CPU and on --compile (compiled), or autograd over a
StackedVAE.
"""

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from vaecli.choices import AUTOGRAD_ONLY
from vaecli.config import TrainConfig
from vaecli.core import loss
from vaecli.core.data import binarize
from vaecli.core.model import VAE, VAEOutput
from vaecli.core.stacked import StackedVAE, member_objectives
from vaecli.engine.written_step import Bf16Step, Fp32Step, WrittenStep
from vaecli.errors import ConfigError

_INIT_LOCK = threading.Lock()  # the initial weights come from the global RNG, which threads share


def build_model(config: TrainConfig) -> VAE:
    """The initial model, the same for the same seed whatever the global RNG holds, in any thread."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # the fused kernel is the fastest Adam on CPU and CUDA and changes no result beyond rounding
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)


def stack_key(config: TrainConfig) -> TrainConfig:
    """What members must share to train stacked: the config with lam, seed and latent size set aside."""
    return replace(config, lam=1.0, seed=0, model=replace(config.model, latent_dim=1))


def stackable(config: TrainConfig) -> bool:
    """Eager steps only: a compiled step of another shape would not round like the member trained alone;
    and not the objectives that couple a batch's images or train a discriminator (AUTOGRAD_ONLY)."""
    return not config.compile and config.objective not in AUTOGRAD_ONLY


def generators(config: TrainConfig, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(shuffle, noise): a run's batch order, drawn on the CPU, and its noise, drawn on `device`."""
    return torch.Generator().manual_seed(config.seed), torch.Generator(device=device).manual_seed(config.seed)


def step_noise(x: torch.Tensor, config: TrainConfig, noise_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (B, D), eps) of a step: x binarized first when the run binarizes, then eps, from one generator.

    eps is (B, H), or (k, B, H) for the importance-weighted objective: k samples of every image.
    """
    if config.binarize:
        x = binarize(x, noise_gen)
    shape: tuple[int, ...] = (len(x), config.model.latent_dim)
    if config.objective == "iwae":
        shape = (config.k, *shape)
    return x, torch.randn(shape, generator=noise_gen, device=x.device)


def warmup(config: TrainConfig, t: int, steps_per_epoch: int) -> float:
    """The share of lam applied at global step t (0-based): it rises linearly, step by step, from 0 to 1
    over the first kl_warmup epochs (Bowman et al. 2016, "Generating sentences from a continuous space",
    section 3.1), and is 1 without a warm-up."""
    return min(1.0, t / (config.kl_warmup * steps_per_epoch)) if config.kl_warmup else 1.0


def schedule(config: TrainConfig, t: int, steps_per_epoch: int) -> tuple[float, float]:
    """(KL weight, capacity) applied at global step t (0-based): lam times its warm-up share, and the
    capacity C(t), which rises from 0 to `capacity` over capacity_epochs (Burgess et al. 2018, section 5)
    and is constant without them."""
    ramp = min(1.0, t / (config.capacity_epochs * steps_per_epoch)) if config.capacity_epochs else 1.0
    return config.lam * warmup(config, t, steps_per_epoch), config.capacity * ramp


WARMUP_SHARE = 0.05  # of a cosine fit's steps, over which the rate rises linearly to --lr
ONECYCLE_RISE, ONECYCLE_START, ONECYCLE_END = 0.3, 1 / 25, 1 / 25e4  # torch's OneCycleLR defaults


def learning_rate(config: TrainConfig, t: int, steps_per_epoch: int) -> float:
    """Adam's learning rate at global step t (0-based) of a fit of config.epochs epochs.

    "constant": config.lr throughout. "cosine": up linearly from lr / n to lr over the first n steps
    (WARMUP_SHARE of the fit), then down along half a cosine to 0 at the last step (Loshchilov and
    Hutter 2017, "SGDR", without restarts; the warm-up of Goyal et al. 2017). "onecycle": Smith and
    Topin 2019, "Super-convergence", as torch.optim.lr_scheduler.OneCycleLR does it: up from lr / 25
    to lr over 30 % of the steps, then down to lr / 25e4, both along half a cosine.
    """
    if config.lr_schedule == "constant":
        return config.lr
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        warm = max(1, round(WARMUP_SHARE * total))
        if t < warm:
            return config.lr * (t + 1) / warm
        return config.lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))
    rise = max(1.0, ONECYCLE_RISE * total - 1)
    if t <= rise:
        return _cosine_between(config.lr * ONECYCLE_START, config.lr, t / rise)
    return _cosine_between(config.lr, config.lr * ONECYCLE_END, (t - rise) / max(1.0, total - 1 - rise))


def _cosine_between(start: float, end: float, share: float) -> float:
    """From start (share 0) to end (share 1) along half a cosine."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, share)))


def set_learning_rate(optimizer: torch.optim.Optimizer, config: TrainConfig, t: int, steps_per_epoch: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, t, steps_per_epoch)


def eval_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    # the same noise every epoch, so test numbers differ only because the model did
    return torch.Generator(device=device).manual_seed(config.seed + 2)


BatchLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def batch_loss_fn(
    model: VAE, config: TrainConfig, device: torch.device, precision: str, data_size: int | None = None
) -> BatchLoss:
    """(x (B, D), eps, lam, capacity) -> (the objective to minimize, its (recon, KL) means): the step's forward.

    lam and capacity default to the config's (a step of a schedule passes its own). bf16: the
    layers run in bfloat16 under autocast; the loss is taken in float32. `data_size`: the training
    images the batches come from (beta-TCVAE's estimator needs it).
    """
    bf16 = precision == "bf16"

    def batch_loss(
        x: torch.Tensor, eps: torch.Tensor, lam: float = config.lam, capacity: float = config.capacity
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, eps=eps)
        if bf16:
            out = VAEOutput(*(t.float() for t in out))
        terms = loss.objective_terms(config, out, x, eps, lam, capacity, data_size)
        return terms.loss, torch.stack((terms.recon, terms.kl)).detach()

    return batch_loss


TrainStep = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def written_step(config: TrainConfig, device: torch.device, precision: str) -> type[WrittenStep] | None:
    """The written-out step that trains `config` there, or None where autograd does: the CPU's eager steps.

    Every objective but those coupling the images of a batch is written out (core/loss.objective_grads),
    so the device and --compile decide; beta-TCVAE's estimator (each sample's density under every image's
    posterior) and DIP-VAE's covariance of the batch's codes take autograd's step, as FactorVAE does with
    its discriminator (engine/factor.py): AUTOGRAD_ONLY.
    """
    if device.type != "cpu" or config.compile or config.objective in AUTOGRAD_ONLY:
        return None
    return {"fp32": Fp32Step, "bf16": Bf16Step}.get(precision)


def step_name(config: TrainConfig, device: torch.device, precision: str) -> str:
    """'written-out fp32', 'written-out bf16', 'autograd' or 'autograd, compiled': what train_step returns."""
    if written_step(config, device, precision) is not None:
        return f"written-out {precision}"
    return "autograd, compiled" if config.compile else "autograd"


def train_step(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    steps_per_epoch: int = 1,
    data_size: int | None = None,
) -> TrainStep:
    """(x (B, D), eps, global step t) -> (the loss, its (recon, KL, objective) means), the model updated once.

    On the CPU, eagerly: the written-out step (written_step), autograd's arithmetic without its graph,
    Optimizer.step's Python or autocast's casts. Otherwise autograd_step. Both at the KL weight and
    capacity that `schedule` gives step t.
    """
    written = written_step(config, device, precision)
    if written is not None:
        return written(model, optimizer, config, lambda t: schedule(config, t, steps_per_epoch))
    return autograd_step(model, optimizer, config, device, precision, steps_per_epoch, data_size)


def autograd_step(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    precision: str,
    steps_per_epoch: int = 1,
    data_size: int | None = None,
) -> TrainStep:
    """train_step through autograd: batch_loss_fn (compiled on --compile), backward, Optimizer.step."""
    batch_loss = batch_loss_fn(model, config, device, precision, data_size)
    # one shape, one compilation: a short last batch runs eagerly instead of recompiling
    full_batch_loss = torch.compile(batch_loss, dynamic=False) if config.compile else batch_loss

    def step(x: torch.Tensor, eps: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        lam, capacity = schedule(config, t, steps_per_epoch)
        forward = full_batch_loss if len(x) == config.batch_size else batch_loss
        loss_value, means = forward(x, eps, lam, capacity)
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        optimizer.step()
        loss_value = loss_value.detach()
        return loss_value, torch.cat((means, loss_value.view(1)))  # the objective's value beside the terms

    return step


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's state as "<index>.step|exp_avg|exp_avg_sq" -> a CPU copy."""
    return {
        f"{index}.{name}": value.detach().cpu().clone()
        for index, entry in optimizer.state_dict()["state"].items()
        for name, value in entry.items()
    }


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


class OneModel:
    """A lone VAE in training: a stack of one member."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        steps_per_epoch: int = 1,
        data_size: int | None = None,
    ) -> None:
        self.model = build_model(config).to(device)
        self.optimizer = make_optimizer(self.model, config, device)
        self._step = train_step(self.model, self.optimizer, config, device, precision, steps_per_epoch, data_size)
        self.config, self.steps_per_epoch = config, steps_per_epoch

    def step(self, xs: list[torch.Tensor], eps: list[torch.Tensor], t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member 0's batch at global step t -> its loss (1,) and (recon, KL, objective) means (1, 3)."""
        set_learning_rate(self.optimizer, self.config, t, self.steps_per_epoch)
        loss_value, means = self._step(xs[0], eps[0], t)
        return loss_value.view(1), means.view(1, 3)

    def member(self, m: int) -> VAE:
        return self.model

    def member_tensors(self, m: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(state_dict, Adam's state) as CPU copies."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, optimizer_tensors(
            self.optimizer
        )

    def load_members(self, tensors: Sequence[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]) -> None:
        (weights, adam), *_ = tensors
        self.model.load_state_dict(weights)
        load_optimizer_tensors(self.optimizer, adam)

    def finish(self) -> None:
        self.model.eval()
        self.model.zero_grad(set_to_none=True)  # a written-out step keeps the gradients between steps


class StackedModels:
    """M VAEs of one architecture as one StackedVAE with one Adam: a step trains them all at once.

    Member m starts from build_model's weights for its config and its loss term
    reaches only its own slice of the weights, so each ends where training it alone
    ends, up to float rounding. bf16: the layers under autocast, as batch_loss_fn.
    """

    def __init__(
        self, configs: Sequence[TrainConfig], device: torch.device, precision: str, steps_per_epoch: int = 1
    ) -> None:
        if len({stack_key(c) for c in configs}) > 1:
            raise ConfigError("stacked members must share everything but lam, seed and latent size; train them apart")
        if not all(stackable(c) for c in configs):
            raise ConfigError("stacked training cannot `compile`; train these members apart")
        self.configs, self.device, self.bf16 = list(configs), device, precision == "bf16"
        self.steps_per_epoch = steps_per_epoch
        self.model = StackedVAE([build_model(c) for c in configs]).to(device)
        self.optimizer = make_optimizer(self.model, configs[0], device)
        self.lam = torch.tensor([c.lam for c in configs], device=device)  # (M,)
        self.latent_dims = torch.tensor([c.model.latent_dim for c in configs], device=device)  # (M,)

    def step(self, xs: list[torch.Tensor], eps: list[torch.Tensor], t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's batch at global step t -> the members' losses (M,) and (recon, KL, objective) means (M, 3)."""
        x = torch.stack(xs)  # (M, B, D)
        pad = self.model.latent_dim
        noise = torch.stack([F.pad(e, (0, pad - e.shape[-1])) for e in eps])  # zero noise in the padding
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x, noise)
        if self.bf16:
            out = VAEOutput(*(t.float() for t in out))
        shared = self.configs[0]  # the objective is part of the stack key
        warm = warmup(shared, t, self.steps_per_epoch)  # the members differ in lam, not in its schedule
        _, capacity = schedule(shared, t, self.steps_per_epoch)
        lam = self.lam if warm == 1.0 else self.lam * warm
        set_learning_rate(self.optimizer, shared, t, self.steps_per_epoch)
        losses, recon, kl = member_objectives(out, x, noise, shared, lam, capacity, self.latent_dims)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # member m's gradient is its own loss's, as if alone
        self.optimizer.step()
        return losses.detach(), torch.stack((recon, kl, losses), dim=1).detach()

    def member(self, m: int) -> VAE:
        return self.model.member(m)

    def _adam_lists(self) -> dict[str, list[torch.Tensor]] | None:
        state = self.optimizer.state
        params = list(self.model.parameters())
        if not all(p in state for p in params):
            return None  # no step yet
        return {name: [state[p][name] for p in params] for name in ("exp_avg", "exp_avg_sq")}

    def member_tensors(self, m: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Member m's (state_dict, Adam's state) in a lone fit's form, as CPU copies."""
        with torch.device("meta"):
            keys = list(VAE(self.configs[m].model).state_dict())
        params = list(self.model.parameters())
        weights = {k: v.detach().cpu().clone() for k, v in zip(keys, self.model.member_views(m, params), strict=True)}
        adam: dict[str, torch.Tensor] = {}
        moments = self._adam_lists()
        if moments is not None:
            steps = [self.optimizer.state[p]["step"] for p in params]
            views = {name: self.model.member_views(m, tensors) for name, tensors in moments.items()}
            for index, step in enumerate(steps):
                adam[f"{index}.step"] = step.detach().cpu().clone()
                for name in ("exp_avg", "exp_avg_sq"):
                    adam[f"{index}.{name}"] = views[name][index].detach().cpu().clone()
        return weights, adam

    @torch.no_grad()
    def load_members(self, tensors: Sequence[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]) -> None:
        """Every member's (state_dict, Adam's state), as member_tensors gives them; the padding stays zero."""
        params = list(self.model.parameters())
        moments = {name: [torch.zeros_like(p) for p in params] for name in ("exp_avg", "exp_avg_sq")}
        steps: set[float] = set()
        for m, (weights, adam) in enumerate(tensors):
            for view, value in zip(self.model.member_views(m, params), weights.values(), strict=True):
                view.copy_(value)
            for name, stacked in moments.items():
                for index, view in enumerate(self.model.member_views(m, stacked)):
                    view.copy_(adam[f"{index}.{name}"])
            steps |= {float(adam[f"{index}.step"]) for index in range(len(params))}
        if len(steps) != 1:
            raise ConfigError("the stacked members' saved states are at different steps; train them apart")
        step = steps.pop()
        state = {
            index: {"step": torch.tensor(step), **{name: moments[name][index] for name in moments}}
            for index in range(len(params))
        }
        self.optimizer.load_state_dict({"state": state, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def finish(self) -> None:
        self.model.eval()
