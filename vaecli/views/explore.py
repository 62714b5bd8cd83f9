"""The latent-space explorer: one self-contained HTML page that decodes live in the browser.

The decoder's weights go into the page as base64 float32 and a hand-written
JavaScript forward pass (vaecli/explore_page/explore.js) decodes with them, so
the page shows exactly what `VAE.decode_mean` gives, to about 1e-6. float16
weights would halve the page but move pixels by up to ~1e-3. The page needs no
server and loads nothing: its Content-Security-Policy forbids every request.
"""

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaecli import __version__, atomic
from vaecli.choices import DATASET_TITLES
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset
from vaecli.core.model import VAE
from vaecli.engine.records import EpochRecord
from vaecli.errors import CheckpointError, ConfigError
from vaecli.store.checkpoint import Run, load_run, read_metadata

INACTIVE_KL = 0.01  # nats: a latent dimension whose mean KL is below this carries no information
POINTS = 3000  # test codes in the H = 2 scatter
SAMPLES = 200  # test images (and their codes) behind the "random test image" button
CLASS_NAMES = {
    "mnist": [str(k) for k in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}
_PAGE = resources.files("vaecli.views") / "explore_page"


@dataclass(frozen=True)
class Codes:
    """What the page shows of one run's test set."""

    mu: torch.Tensor  # (N, H) mean codes of the whole test split
    kl: torch.Tensor  # (H,) mean KL to the prior per latent dimension, nats


def load_runs(paths: Sequence[Path | str]) -> list[Run]:
    """Load runs for one page, checking they can decode the same z into same-sized images.

    A lone model.safetensors has no metrics.json; its final test metrics are read
    from the checkpoint's metadata instead, as a one-record history.
    """
    if not paths:
        raise ConfigError("give at least one run folder or model.safetensors")
    runs = []
    for path in paths:
        run = load_run(path)
        if not run.history:
            metrics = read_metadata(Path(path)).get("metrics")
            try:
                run.history = [EpochRecord.from_dict(json.loads(metrics))] if metrics else []
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path}: bad metrics in metadata ({e})") from e
        runs.append(run)
    check_compatible(runs, [str(p) for p in paths])
    return runs


def check_compatible(runs: Sequence[Run], names: Sequence[str] | None = None) -> None:
    """One page decodes one z with every model into images of one size: refuse anything else."""
    names = list(names or [str(r.path) for r in runs])
    for attribute, what, fix in (
        ("image_shape", "image sizes", "runs of one data set"),
        ("latent_dim", "latent sizes", "runs with the same --hidden"),
    ):
        values = [getattr(r.config.model, attribute) for r in runs]
        if len(set(values)) > 1:
            listed = ", ".join(f"{name}: {_fmt_value(v)}" for name, v in zip(names, values, strict=True))
            raise ConfigError(f"runs with different {what} cannot share one page ({listed}); give {fix}")


def _fmt_value(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else f"H={value}"


def decoder_layers(model: VAE) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The decoder as (weight (out, in), bias) per Linear layer: Linear (ReLU Linear)*, then sigmoid.

    Refuses any other architecture, since the page's forward pass knows only this one.
    """
    leaves = [m for m in model.decoder.modules() if not list(m.children())]
    linears = [m for m in leaves[0::2] if isinstance(m, nn.Linear)]
    relus = leaves[1::2]
    ok = (
        len(leaves) % 2 == 1
        and len(linears) == len(leaves[0::2])  # every other leaf a Linear
        and all(isinstance(m, nn.ReLU) for m in relus)
    )
    if not ok:
        kinds = ", ".join(type(m).__name__ for m in leaves)
        raise ConfigError(f"the page can decode only Linear/ReLU decoders, this one has {kinds}")
    return [(m.weight.detach().float().cpu(), m.bias.detach().float().cpu()) for m in linears]


@torch.no_grad()
def encode_test_set(run: Run, data: Dataset, batch_size: int = 2000) -> Codes:
    """Mean codes of the test split and the mean KL of each latent dimension."""
    model = run.model.eval()
    device = next(model.parameters()).device
    mus, kl = [], torch.zeros(run.config.model.latent_dim, dtype=torch.float64)
    images = data.test.images
    for start in range(0, len(images), batch_size):
        mu, logvar = model.encode(images[start : start + batch_size].to(device))
        # KL(N(mu, sigma^2) || N(0, 1)) per dimension (Kingma & Welling 2014, appendix B)
        kl += (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).double().sum(0).cpu()
        mus.append(mu.float().cpu())
    return Codes(torch.cat(mus), (kl / len(images)).float())


def _b64(tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> str:
    # little-endian bytes, as JavaScript's typed arrays read them on every platform browsers run on
    array = tensor.detach().to(dtype).cpu().contiguous().numpy()
    return base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def _pixels_u8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def caption(config: TrainConfig, final: EpochRecord | None) -> tuple[str, str]:
    """(config line, test metrics line) of a run, as the page shows them: the config in its long description."""
    setup = config.describe(long=True)
    if final is None:
        return setup, "test metrics: not recorded"
    t = final.test
    # U+2212, a minus sign: no line break between it and "ELBO"
    return setup, f"test: recon {t.recon:.2f}, KL {t.kl:.2f}, \u2212ELBO {t.neg_elbo:.2f} nats per image"


def _datasets_by_name(data: Dataset | Mapping[str, Dataset] | None) -> dict[str, Dataset]:
    if data is None:
        return {}
    if isinstance(data, Dataset):
        return {data.name: data}
    return dict(data)


def page_data(
    runs: Sequence[Run],
    data: Dataset | Mapping[str, Dataset] | None = None,
    *,
    names: Sequence[str] | None = None,
    points: int = POINTS,
    samples: int = SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the page's script needs, as JSON-ready values (weights as base64)."""
    if not runs:
        raise ConfigError("give at least one run")
    check_compatible(runs, names)
    names = list(names or [r.path.name or str(r.path) for r in runs])
    datasets = _datasets_by_name(data)
    config = runs[0].config.model
    notes: list[str] = []
    picks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # dataset -> (scatter, sample) indices
    sample_images: dict[str, dict[str, Any]] = {}
    entries = []
    extent = 4.0  # the plane shows at least the prior's 3 sigma circle
    for run, name in zip(runs, names, strict=True):
        dataset = datasets.get(run.config.dataset)
        if dataset is not None and dataset.image_shape != run.config.model.image_shape:
            notes.append(f"{name}: {dataset.name} images are not {run.config.model.image_shape}; no test codes")
            dataset = None
        setup, metrics = caption(run.config, run.final)
        entry: dict[str, Any] = {
            "name": name,
            "setup": setup,
            "metrics": metrics,
            "dataset": run.config.dataset,
            "layers": [
                {"n_in": w.shape[1], "n_out": w.shape[0], "w": _b64(w.T), "b": _b64(b)}
                for w, b in decoder_layers(run.model)
            ],
            "kl": None,
            "scatter": None,
            "codes": None,
        }
        if dataset is None:
            entries.append(entry)
            continue
        codes = encode_test_set(run, dataset)
        if run.config.dataset not in picks:
            n = len(dataset.test.images)
            g = torch.Generator().manual_seed(seed)
            picks[run.config.dataset] = (
                torch.randperm(n, generator=g)[:points],
                torch.randperm(n, generator=g)[:samples],
            )
        scatter, sample = picks[run.config.dataset]
        if run.config.dataset not in sample_images:
            sample_images[run.config.dataset] = {
                "images": _b64(_pixels_u8(dataset.test.images[sample]), torch.uint8),
                "labels": dataset.test.labels[sample].tolist(),
                "classes": CLASS_NAMES[run.config.dataset],
            }
        entry["kl"] = [round(v, 5) for v in codes.kl.tolist()]
        entry["codes"] = _b64(codes.mu[sample])
        if config.latent_dim == 2:
            mu = codes.mu[scatter]
            entry["scatter"] = {"z": _b64(mu), "labels": _b64(dataset.test.labels[scatter], torch.uint8)}
            extent = max(extent, math.ceil(float(mu.abs().quantile(0.995))))
        entries.append(entry)
    missing = sorted({r.config.dataset for r in runs} - set(picks))
    if missing:
        titles = ", ".join(DATASET_TITLES[m] for m in missing)
        notes.append(f"no {titles} test set was given: no test codes, " + _without_codes(config.latent_dim))
    return {
        "version": __version__,
        "latent_dim": config.latent_dim,
        "image_shape": list(config.image_shape),
        "extent": extent,
        "inactive_kl": INACTIVE_KL,
        "runs": entries,
        "samples": sample_images,
        "notes": notes,
    }


def _without_codes(latent_dim: int) -> str:
    if latent_dim == 2:
        return "so no scatter and no random test image"
    return "so sliders in natural order, activity unknown, and no random test image"


def _template(name: str) -> str:
    return (_PAGE / name).read_text(encoding="utf-8")


def page(
    runs: Sequence[Run],
    data: Dataset | Mapping[str, Dataset] | None = None,
    *,
    names: Sequence[str] | None = None,
    points: int = POINTS,
    samples: int = SAMPLES,
    seed: int = 0,
) -> str:
    """The explorer page for `runs` as one HTML string; `data` gives test codes (optional)."""
    payload = page_data(runs, data, names=names, points=points, samples=samples, seed=seed)
    # "<" escaped so no string in the JSON can close the <script> element that holds it
    blob = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    title = "vaecli explore: " + ", ".join(e["name"] for e in payload["runs"])
    values = {
        "CSS": _template("explore.css"),
        "JS": _template("explore.js"),
        "TITLE": _escape(title),
        "VERSION": __version__,
        "DATA": blob,
    }
    # one pass over the template, so nothing inserted is searched for markers again
    return re.sub(
        r"/\*(CSS|JS)\*/|\{\{(TITLE|VERSION|DATA)\}\}", lambda m: values[m[1] or m[2]], _template("page.html")
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def save(html: str, path: Path | str) -> Path:
    """Write the page atomically; an unwritable path raises OutputError."""
    return atomic.write_text(Path(path), html)
