"""vaecli's trainer against a tutorial-style loop and the machine's limit, side by side.

    python benchmarks/bench_train.py --data-dir /path/to/data     # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_train.py --data-dir DIR --quick       # a smoke run of a few seconds

Three variants train on the same data, model, initial weights and seed:
  baseline  the well-known tutorial recipe, written out below: torchvision's MNIST
            with ToTensor through a DataLoader, sigmoid + BCE, PyTorch's default Adam,
            a `.item()` every step (pytorch/examples vae/main.py, widened to vaecli's layers)
  vaecli    `vaecli.train` with vaecli's defaults, through the library API
  limit     only the matrix products of vaecli's training, layer by layer (forward,
            and backward for the weights and the inputs), on tensors of the same shapes
            and dtype, each through the kernel vaecli's step uses for it (in float32 on
            the CPU, oneDNN for the wide layers: core/kernels.py): what an epoch would
            cost if nothing but the matmuls took time
  limit32   the same in float32, shown (not a target) when vaecli runs in bfloat16
It prints the CPU's vector units (AVX2, AVX-512, AVX512-BF16, AMX) and which training
step vaecli ran: written out (fp32 or bf16, on the CPU) or autograd; `--autograd`
trains through the autograd step instead, to compare the two.
The machine is noisy (shared cores, thermal throttling), so the variants take turns:
every epoch is cut into slices and after each slice of vaecli (an Observer hook
pauses it) the baseline and the limit run the same fraction of their epoch.
Ratios are medians of the per-slice ratios; seconds per epoch are medians over
epochs. Each variant's clock runs only while it works, so its time to the
target loss is its own wall clock, data loading and evaluations included.
"""

import argparse
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from common import add_data_dir, check_data_dir, machine, sync
from torch import nn

import vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import kernels
from vaecli.engine import steps
from vaecli.engine.device import resolve_device, resolve_precision
from vaecli.engine.steps import build_model

TARGETS = {"vs_limit": 1.3, "vs_baseline": 1 / 3.5, "to_target": 1 / 5, "help": 1 / 4}


# --- (1) the tutorial-style baseline ---------------------------------------------------


class TutorialVAE(nn.Module):
    """The tutorial's VAE: fc layers, ReLU, sigmoid output, reparameterize with torch.randn_like."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        widths = [config.input_dim, *config.hidden_layers]
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.fc_mu = nn.Linear(widths[-1], config.latent_dim)
        self.fc_logvar = nn.Linear(widths[-1], config.latent_dim)
        back = [config.latent_dim, *reversed(config.hidden_layers), config.input_dim]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back, back[1:], strict=False))
        self.input_dim = config.input_dim

    def encode(self, x):
        h = x
        for layer in self.enc:
            h = F.relu(layer(h))
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h = z
        for layer in self.dec[:-1]:
            h = F.relu(layer(h))
        return torch.sigmoid(self.dec[-1](h))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, self.input_dim))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def tutorial_loss(recon_x, x, mu, logvar, lam):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + lam * kld, bce + kld


class Baseline:
    """The tutorial's train() and test(), cut so that an epoch can run in pieces."""

    def __init__(self, config: TrainConfig, data_dir: Path, device: torch.device, initial: nn.Module) -> None:
        from torchvision import datasets, transforms

        torch.manual_seed(config.seed)
        to_tensor = transforms.ToTensor()
        self.train_loader = torch.utils.data.DataLoader(
            datasets.MNIST(str(data_dir), train=True, download=False, transform=to_tensor),
            batch_size=config.batch_size,
            shuffle=True,
        )
        self.test_loader = torch.utils.data.DataLoader(
            datasets.MNIST(str(data_dir), train=False, transform=to_tensor), batch_size=config.batch_size
        )
        self.model = TutorialVAE(config.model).to(device)
        with torch.no_grad():  # start from vaecli's initial weights: the same model, really
            for mine, theirs in zip(self.model.parameters(), initial.parameters(), strict=True):
                mine.copy_(theirs)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.device, self.lam = device, config.lam
        self.steps_per_epoch = len(self.train_loader)
        self.batches = iter(())
        self.train_loss = 0.0

    def run(self, steps: int, first: bool) -> None:
        if first:
            self.model.train()
            self.batches = iter(self.train_loader)
        for _ in range(steps):
            data, _ = next(self.batches)
            data = data.to(self.device)
            self.optimizer.zero_grad()
            recon_batch, mu, logvar = self.model(data)
            loss, _ = tutorial_loss(recon_batch, data, mu, logvar, self.lam)
            loss.backward()
            self.train_loss += loss.item()
            self.optimizer.step()

    def test(self) -> float:
        """Test negative ELBO in nats per image (recon + KL, one z sample each)."""
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for data, _ in self.test_loader:
                data = data.to(self.device)
                recon, mu, logvar = self.model(data)
                total += tutorial_loss(recon, data, mu, logvar, self.lam)[1].item()
        return total / len(self.test_loader.dataset)


# --- (3) the limit: vaecli's matrix products and nothing else ----------------------------


def layer_shapes(model: ModelConfig) -> list[tuple[int, int, bool]]:
    """(in, out, needs input gradient) of every linear layer, mu and logvar heads apart."""
    widths = [model.input_dim, *model.hidden_layers]
    encoder = list(zip(widths, widths[1:], strict=False))
    heads = [(widths[-1], model.latent_dim)] * 2
    back = [model.latent_dim, *reversed(model.hidden_layers), model.input_dim]
    decoder = list(zip(back, back[1:], strict=False))
    # the images need no gradient, so the first layer's backward has one product, not two
    return [(a, b, i > 0) for i, (a, b) in enumerate(encoder + heads + decoder)]


def flops_per_epoch(model: ModelConfig, n: int) -> int:
    """2*in*out per image for each product: forward, weight gradient, input gradient."""
    return sum(2 * n * a * b * (3 if grad_in else 2) for a, b, grad_in in layer_shapes(model))


class Limit:
    """The step's matmuls on preallocated tensors: forward x W^T, backward dY^T X and dY W."""

    def __init__(self, model: ModelConfig, batch: int, n: int, device: torch.device, dtype: torch.dtype) -> None:
        self.steps_per_epoch = math.ceil(n / batch)
        self.step_count = 0
        self.dtype = dtype
        last = n - batch * (self.steps_per_epoch - 1)
        self.chains = {b: self._chain(model, b, device, dtype) for b in {batch, last}}
        self.batch, self.last = batch, last

    @staticmethod
    def _chain(model: ModelConfig, b: int, device: torch.device, dtype: torch.dtype) -> list[Callable[[], None]]:
        # its own generator: drawing from the global one would reseed the baseline's shuffling
        generator = torch.Generator(device=device).manual_seed(0)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, device=device).to(dtype)

        calls = []
        onednn = kernels.onednn_linear() if device.type == "cpu" and dtype == torch.float32 else None
        for a, o, grad_in in layer_shapes(model):
            x, w, dy = rand(b, a), rand(o, a), rand(b, o)
            y, dw, dx = rand(b, o), rand(o, a), rand(b, a)
            if onednn is not None and kernels.wide(a, o):  # the kernel vaecli's float32 step takes for the layer
                calls.append(lambda x=x, w=w: onednn(x, w, None, "none", [], ""))
                calls.append(lambda x=x, dy=dy: onednn(dy.t(), x.t(), None, "none", [], ""))  # a new .grad, as the step
                if grad_in:
                    calls.append(lambda w=w, dy=dy: onednn(dy, w.t(), None, "none", [], ""))
                continue
            calls.append(lambda x=x, w=w, y=y: torch.mm(x, w.t(), out=y))
            calls.append(lambda x=x, dy=dy, dw=dw: torch.mm(dy.t(), x, out=dw))
            if grad_in:
                calls.append(lambda w=w, dy=dy, dx=dx: torch.mm(dy, w, out=dx))
        return calls

    def run(self, steps: int, first: bool) -> None:
        if first:
            self.step_count = 0
        for _ in range(steps):
            self.step_count += 1
            b = self.last if self.step_count == self.steps_per_epoch else self.batch
            for call in self.chains[b]:
                call()


# --- the interleaving -------------------------------------------------------------------


@dataclass
class Clocked:
    """One variant's own time: per slice, per epoch, and its test loss after each epoch."""

    name: str
    clock: float = 0.0  # seconds this variant has worked, setup and evaluations included
    slices: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, share of it, seconds)
    tests: list[tuple[float, float]] = field(default_factory=list)  # (test -ELBO, clock) after each epoch

    def add(self, epoch: int, share: float, seconds: float) -> None:
        self.clock += seconds
        self.slices.append((epoch, share, seconds))

    def epoch_seconds(self) -> list[float]:
        per: dict[int, float] = {}
        for epoch, _, seconds in self.slices:
            per[epoch] = per.get(epoch, 0.0) + seconds
        return list(per.values())

    def time_to(self, target: float) -> tuple[int, float] | None:
        """(epoch, clock) when the test -ELBO first reached `target`."""
        return next(((i + 1, c) for i, (loss, c) in enumerate(self.tests) if loss <= target), None)


def slice_ratios(a: Clocked, b: Clocked) -> list[float]:
    """a's seconds per epoch over b's, slice by slice (slices where either did no step are left out)."""
    return [
        (sa / fa) / (sb / fb) for (_, fa, sa), (_, fb, sb) in zip(a.slices, b.slices, strict=True) if fa > 0 and fb > 0
    ]


class Interleave(vaecli.Observer):
    """Pauses vaecli at every slice boundary and lets the baseline and the limit catch up."""

    def __init__(self, slices: int, device: torch.device, others: dict[str, Baseline | Limit]) -> None:
        self.n_slices, self.device, self.others = slices, device, others
        self.clocks = {name: Clocked(name) for name in ("vaecli", *others)}
        self.done = dict.fromkeys(others, 0)  # steps of the current epoch each other variant has run
        self.paused = 0.0  # time spent in the other variants while vaecli.train runs

    def begin(self) -> None:
        self.t0 = time.perf_counter()

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: torch.device) -> None:
        self.steps = steps_per_epoch
        # the step after which each slice ends: equal shares of the epoch
        self.cuts = {max(1, round(steps_per_epoch * (k + 1) / self.n_slices)) for k in range(self.n_slices)}
        self.mark = time.perf_counter()
        self.last_step = 0

    def on_batch(self, epoch: int, step: int) -> None:
        if step not in self.cuts:
            return
        sync(self.device)
        now = time.perf_counter()
        self.clocks["vaecli"].add(epoch, (step - self.last_step) / self.steps, now - self.mark)
        self.last_step = step % self.steps
        for name, variant in self.others.items():
            target = round(variant.steps_per_epoch * step / self.steps)
            start = time.perf_counter()
            variant.run(target - self.done[name], first=self.done[name] == 0)
            sync(self.device)
            share = (target - self.done[name]) / variant.steps_per_epoch
            self.clocks[name].add(epoch, share, time.perf_counter() - start)
            self.done[name] = target % variant.steps_per_epoch
        self.mark = time.perf_counter()
        self.paused += self.mark - now

    def on_epoch(self, record: vaecli.EpochRecord) -> None:
        now = time.perf_counter()
        self.clocks["vaecli"].tests.append((record.test.neg_elbo, now - self.t0 - self.paused))
        baseline = self.clocks["baseline"]
        start = time.perf_counter()
        loss = self.others["baseline"].test()
        baseline.clock += time.perf_counter() - start
        baseline.tests.append((loss, baseline.clock))
        self.mark = time.perf_counter()
        self.paused += self.mark - now


# --- `vaecli --help` against `import torch` ------------------------------------------------


def startup_times(runs: int) -> tuple[float, float, bool]:
    """Median seconds of `vaecli --help` and of `python -c "import torch"`, taking turns."""
    exe = Path(sys.executable).with_name("vaecli")
    help_cmd = [str(exe), "--help"] if exe.is_file() else [sys.executable, "-m", "vaecli", "--help"]
    torch_cmd = [sys.executable, "-c", "import torch"]
    times: dict[str, list[float]] = {"help": [], "torch": []}
    for _ in range(runs):
        for key, cmd in (("help", help_cmd), ("torch", torch_cmd)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[key].append(time.perf_counter() - start)
    probe = (
        "import sys\nfrom vaecli.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules or 'matplotlib' in sys.modules)"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return statistics.median(times["help"]), statistics.median(times["torch"]), heavy.stdout.strip().endswith("True")


# --- the machine's vector units ---------------------------------------------------------------


def vector_units() -> str:
    """The CPU's vector units as /proc/cpuinfo's flags name them (Linux), and the kernels torch picked."""
    units = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "")
        flags = set(line.partition(":")[2].split())
        named = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"))
        units = [label for flag, label in named if flag in flags]
    kernels = torch.backends.cpu.get_cpu_capability()
    return f"{', '.join(units) or 'none of AVX2, AVX-512, AMX'} (torch's CPU kernels: {kernels})"


# --- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(parser)
    parser.add_argument("--epochs", type=int, default=10, help="epochs for every variant (default 10)")
    parser.add_argument("--slices", type=int, default=8, help="turns per epoch (default 8)")
    parser.add_argument("--hidden", type=int, default=20, help="latent size H (default 20)")
    parser.add_argument("--lam", type=float, default=1.0, help="KL weight (default 1)")
    parser.add_argument("--target", type=float, default=106.0, help="test -ELBO to time (default 106 nats)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--startup-runs", type=int, default=5, help="runs of `vaecli --help` and of `import torch`")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 2 slices, 1 startup run: a smoke test")
    parser.add_argument("--batch-size", type=int, help="vaecli's batch size (default: vaecli's default)")
    parser.add_argument("--lr", type=float, help="vaecli's learning rate (default: vaecli's default)")
    parser.add_argument("--precision", help="vaecli's precision (default: vaecli's default)")
    parser.add_argument("--compile", action="store_true", help="vaecli with torch.compile")
    parser.add_argument("--autograd", action="store_true", help="vaecli through the autograd step, not written out")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.slices, args.startup_runs = 1, 2, 1
    check_data_dir(parser, args)

    device = resolve_device(args.device)
    model = ModelConfig(latent_dim=args.hidden)
    overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "precision") if getattr(args, k) is not None}
    if args.compile:
        overrides["compile"] = True
    config = TrainConfig(model=model, lam=args.lam, epochs=args.epochs, **overrides)
    tutorial = TrainConfig(model=model, lam=args.lam, epochs=args.epochs, batch_size=128, lr=1e-3)
    data = vaecli.load_dataset("mnist", args.data_dir)
    n = len(data.train.images)
    precision = resolve_precision(config.precision, device)  # "auto" picks bf16 where it is native
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    initial = build_model(config)
    start = time.perf_counter()
    baseline = Baseline(tutorial, args.data_dir, device, initial)
    setup = time.perf_counter() - start
    limits = {"limit": Limit(model, config.batch_size, n, device, dtype)}
    if dtype != torch.float32:
        limits["limit32"] = Limit(model, config.batch_size, n, device, torch.float32)
    for limit in limits.values():
        limit.run(2, first=True)  # allocate and warm up once, outside any clock
    bench = Interleave(args.slices, device, {"baseline": baseline, **limits})
    bench.clocks["baseline"].clock = setup
    # --autograd: no written-out step for any config, so train_step falls back to autograd's
    no_written: AbstractContextManager = nullcontext()
    if args.autograd:
        no_written = mock.patch.object(steps, "written_step", return_value=None)
    bench.begin()
    with no_written:
        step = steps.step_name(config, device, precision)
        vaecli.train(config, None, device=str(device), data_dir=args.data_dir, observer=bench)
    help_s, torch_s, heavy = startup_times(args.startup_runs)

    v, b, lim = (bench.clocks[k] for k in ("vaecli", "baseline", "limit"))
    vs_base, vs_limit = (statistics.median(slice_ratios(v, other)) for other in (b, lim))
    flops = flops_per_epoch(model, n)
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    layers = "-".join(map(str, (model.input_dim, *model.hidden_layers, model.latent_dim)))
    options = ", ".join(f"{k} {v}" for k, v in overrides.items()) or "defaults"
    options += f" ({precision})" if "precision" not in overrides or precision != config.precision else ""

    print(f"vaecli {vaecli.__version__} benchmark, torch {torch.__version__}, {device.type} ({threads})")
    print(f"machine: {machine()}")
    print(f"vector units: {vector_units()}")
    print(f"vaecli's training step: {step}")
    print(
        f"MNIST {n} train / {len(data.test.images)} test images, model {layers} (mirrored), lam {args.lam:g}, "
        f"seed {config.seed}, {args.epochs} epochs, {args.slices} turns per epoch"
    )
    print()
    rows = [
        ("baseline", "DataLoader + ToTensor tutorial loop", tutorial, b),
        ("vaecli", f"vaecli.train, {options}", config, v),
        *(
            (name, f"vaecli's matmuls only, {str(c.dtype).removeprefix('torch.')}", config, bench.clocks[name])
            for name, c in limits.items()
        ),
    ]
    to_head = f"time to {args.target:g}"
    print(f"{'variant':9} {'what':36} {'batch':>5} {'lr':>6} {'s/epoch':>8} {'test -ELBO':>10} {to_head:>16}")
    for name, what, cfg, c in rows:
        per_epoch = statistics.median(c.epoch_seconds())
        loss = f"{c.tests[-1][0]:.2f}" if c.tests else ""
        reached = c.time_to(args.target)
        matmuls = name.startswith("limit")
        to = "" if matmuls else "not reached" if reached is None else f"{reached[1]:.1f} s (ep {reached[0]})"
        lr = "" if matmuls else f"{cfg.lr:g}"
        print(f"{name:9} {what:36} {cfg.batch_size:>5} {lr:>6} {per_epoch:>8.2f} {loss:>10} {to:>16}")
    rates = ", ".join(
        f"{name} {flops / statistics.median(bench.clocks[name].epoch_seconds()) / 1e9:.0f}" for name in limits
    )
    print(f"limit = {flops / 1e9:.0f} GFLOP per epoch (forward + backward, layer by layer); GFLOP/s: {rates}")
    print(f"vaecli's recipe: Adam {config.describe_lr()} over {config.epochs} epochs; the baseline's: Adam lr 0.001")
    for name, c in (("baseline", b), ("vaecli", v)):
        print(f"test -ELBO by epoch, {name + ':':9} " + " ".join(f"{loss:.1f}" for loss, _ in c.tests))
    print()
    print(
        f"ratio vaecli/baseline, s/epoch:  {vs_base:.3f} ({1 / vs_base:.2f}x faster; median of {len(v.slices)} slices)"
        f"  target <= {TARGETS['vs_baseline']:.3f}: {verdict(vs_base <= TARGETS['vs_baseline'])}"
    )
    print(
        f"ratio vaecli/limit, s/epoch:     {vs_limit:.3f} (median of {len(v.slices)} slices; limit in {precision})"
        f"  target <= {TARGETS['vs_limit']:.3f}: {verdict(vs_limit <= TARGETS['vs_limit'])}"
    )
    if "limit32" in limits:
        vs_32 = statistics.median(slice_ratios(v, bench.clocks["limit32"]))
        print(f"ratio vaecli/limit32, s/epoch:   {vs_32:.3f} (median of {len(v.slices)} slices; float32, not a target)")
    reach_v, reach_b = v.time_to(args.target), b.time_to(args.target)
    if reach_v and reach_b:
        ratio = reach_v[1] / reach_b[1]
        seconds = f"{reach_v[1]:.1f} s vs {reach_b[1]:.1f} s"
        print(
            f"ratio vaecli/baseline, time to {args.target:g} nats: {ratio:.3f} ({seconds})"
            f"  target <= {TARGETS['to_target']:.3f}: {verdict(ratio <= TARGETS['to_target'])}"
        )
    else:
        missing = " and ".join(name for name, r in (("vaecli", reach_v), ("baseline", reach_b)) if r is None)
        print(f"ratio vaecli/baseline, time to {args.target:g} nats: n/a ({missing} not there in {args.epochs} epochs)")
    ok = help_s / torch_s < TARGETS["help"] and not heavy
    print(
        f"ratio vaecli --help / import torch: {help_s / torch_s:.3f} ({help_s:.2f} s vs {torch_s:.2f} s, median of "
        f"{args.startup_runs}; --help imports torch or matplotlib: {'yes' if heavy else 'no'})"
        f"  target < {TARGETS['help']:.3f}: {verdict(ok)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
