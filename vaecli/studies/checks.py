"""`vaecli derive`'s checks as one library call: settings in, Findings out, ready to render or export.

    from vaecli.studies.checks import DeriveSettings, check_parts
    findings = check_parts(DeriveSettings(epochs=2), parts=(1, 2, 3, 4))
    print(len(findings.failed), "failed")

DeriveChecks obtains the data, the model and the λ sweep's runs on first use
(the sweep through studies/sweep.run_sweep, so its runs are ordinary runs of the
store) and makes each part's checks; the command line calls it part by part to
show each derivation before its checks.
"""

import os
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vaecli.choices import DATASET_TITLES
from vaecli.config import ModelConfig, TrainConfig, epochs_text
from vaecli.core.data import Dataset, Split, default_data_dir, load_dataset
from vaecli.core.idx import find_raw_dir
from vaecli.core.images import Images
from vaecli.core.model import VAE
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import load_run
from vaecli.studies import derive, identities
from vaecli.studies.decomposition import decomposition_checks
from vaecli.studies.identities import Findings, SweepRow
from vaecli.studies.observer import SweepObserver
from vaecli.studies.sweep import Sweep, SweepOptions, run_sweep


@dataclass(frozen=True)
class DeriveSettings:
    """What the checks run on: `model`, else the store's runs of this small config (trained when missing)."""

    model: Path | None = None  # a run folder or model.safetensors for parts 1 and 2
    hidden: int = 2  # latent size of the runs checked on (quadrature needs 1 or 2)
    lams: tuple[float, ...] = (1.0, 5.0, 10.0, 40.0)  # the λ of part 3's runs
    epochs: int | None = None  # None: the store's longest-trained finished runs of these settings, else BRIEF
    layers: tuple[int, ...] = (512, 256)
    seed: int = 0
    image: int = 0  # which test image parts 1 and 2 are checked on
    synthetic: bool = False  # synthetic bar images instead of MNIST
    device: str = "auto"
    data_dir: Path | None = None
    download: bool = False
    runs_dir: Path | None = None

    def base_config(self, epochs: int | None = None) -> TrainConfig:
        """The λ = 1 run's config, at `epochs` (default: the settings', else BRIEF)."""
        model = ModelConfig(latent_dim=self.hidden, hidden_layers=tuple(self.layers))
        return TrainConfig(model=model, lam=1.0, epochs=epochs or self.epochs or BRIEF, seed=self.seed)


DECOMPOSITION_IMAGES = 64  # part 5's data set: few enough that q(z) is a mixture integrated on a grid
BRIEF = 2  # epochs of the runs derive trains when the store holds none of its settings: enough for the checks


def finished_epochs(base: TrainConfig, lams: Sequence[float], store: Path | None) -> int | None:
    """The most epochs at which the store holds a finished run of `base` (but for its epochs) for every λ."""
    from vaecli.store.runs import list_runs

    wanted, found = {float(lam) for lam in lams}, dict[int, set[float]]()
    for entry in list_runs(store):
        config = entry.config
        if entry.problem is None and config is not None and replace(config, lam=1.0, epochs=base.epochs) == base:
            found.setdefault(config.epochs, set()).add(config.lam)
    complete = [epochs for epochs, have in found.items() if wanted <= have]
    return max(complete) if complete else None


def lam_sweep(
    base: TrainConfig,
    lams: Sequence[float] = (1.0, 5.0, 10.0, 40.0),
    *,
    data: Dataset,
    in_memory: bool = False,
    store: Path | None = None,
    device: str = "auto",
    observer: SweepObserver | None = None,
) -> list[SweepRow]:
    """One run of `base` per λ (sorted, each once), through run_sweep: reused from the store when finished.

    One by one and not scored, as part 3 needs only each run's final test terms.
    `in_memory` trains in a temporary store that is gone afterwards (for data the
    store cannot name, e.g. synthetic).
    """
    sweep = Sweep(base, lams=tuple(sorted({float(lam) for lam in lams})))
    with tempfile.TemporaryDirectory(prefix="vaecli-derive-") if in_memory else nullcontext(None) as scratch:
        options = SweepOptions(
            store=Path(scratch) if scratch else store, device=device, iw_samples=None, stack="off", jobs=1
        )
        members = run_sweep(sweep, data, options, observer=observer)
    rows = []
    for member in members:
        if member.error is not None:
            raise member.error
        final = member.history[-1].test
        where = "in memory" if in_memory else str(member.path)
        rows.append(SweepRow(member.config.lam, final.kl, final.recon, where, member.reused, member.model))
    return rows


# --------------------------------------------------------------------------- images


def synthetic_dataset(n_train: int = 8192, n_test: int = 256, seed: int = 0) -> Dataset:
    """28x28 images of one bright horizontal bar whose height is the class: a stand-in for MNIST."""

    def split(n: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.zeros(n, 28, 28)
        for i, k in enumerate(labels.tolist()):
            images[i, 2 + 2 * k : 5 + 2 * k, 4:24] = 0.9
        images = (images + 0.1 * torch.rand(n, 28, 28, generator=g)).clamp(0, 1)
        return Split(Images.from_float(images), labels)

    return Dataset("synthetic", split(n_train, seed), split(n_test, seed + 1), (28, 28), Path("synthetic"))


def pick_image(data: Dataset, index: int = 0) -> tuple[torch.Tensor, str]:
    """Test image `index` (D,) and a description of it."""
    n = len(data.test.images)
    if not 0 <= index < n:
        raise ConfigError(f"image index must be between 0 and {n - 1}, got {index}")
    what = "synthetic bar image" if data.name == "synthetic" else f"{data.name.upper()} test image"
    if data.name == "fashion-mnist":
        what = "Fashion-MNIST test image"
    return data.test.images[index], f"{what} #{index} (label {int(data.test.labels[index])})"


def find_data(
    name: str = "mnist", data_dir: Path | None = None, *, download: bool = False, synthetic: bool = False
) -> tuple[Dataset, str]:
    """The data set to check on, and a sentence saying which it is.

    A folder the user named (data_dir, VAECLI_DATA_DIR) must hold the data; without
    one, the default folder is used when it has them (or `download`), else
    synthetic images stand in.
    """
    if synthetic:
        return synthetic_dataset(), "synthetic bar images (--synthetic)"
    title = DATASET_TITLES[name]
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if data_dir is not None or os.environ.get("VAECLI_DATA_DIR") or download or find_raw_dir(name, root):
        data = load_dataset(name, data_dir, download_missing=download or None)
        return data, f"{title} from {data.source}"
    return synthetic_dataset(), (
        f"synthetic bar images: no {title} in {root} "
        "(point --data-dir or VAECLI_DATA_DIR at it, or add --download, for real images)"
    )


# --------------------------------------------------------------------------- the checks of each part


@dataclass
class _Subject:
    model: VAE
    image: torch.Tensor
    lines: list[str]
    images: torch.Tensor  # the first DECOMPOSITION_IMAGES test images: part 5's data set


@dataclass
class DeriveChecks:
    """Makes each part's checks, obtaining the data, the model and the runs on first use."""

    settings: DeriveSettings = field(default_factory=DeriveSettings)
    observer: SweepObserver | None = None  # sees the λ sweep's training
    _data: dict[str, tuple[Dataset, str]] = field(default_factory=dict)
    _rows: dict[float, SweepRow] = field(default_factory=dict)
    _subject: _Subject | None = None
    _epochs: int | None = None
    why: str = ""  # how the epochs were chosen, once they are

    def dataset(self, name: str) -> tuple[Dataset, str]:
        """The data set `name` (or its synthetic stand-in) and a sentence saying which it is."""
        if name not in self._data:
            s = self.settings
            self._data[name] = find_data(name, s.data_dir, download=s.download, synthetic=s.synthetic)
        return self._data[name]

    @property
    def epochs(self) -> int:
        """The epochs of the runs checked on: the settings', else those of the store's longest finished runs of
        the settings (for λ = 1 and every λ of part 3), else BRIEF; `why` says which."""
        if self._epochs is None:
            s = self.settings
            found = None
            if s.epochs is None and not s.synthetic:
                found = finished_epochs(s.base_config(), (1.0, *s.lams), s.runs_dir)
            self._epochs = s.epochs or found or BRIEF
            self.why = (
                "as --epochs asks"
                if s.epochs
                else "the store's longest-trained finished runs of these settings"
                if found
                else "a brief fit: the store holds no finished runs of these settings for every λ"
            )
        return self._epochs

    def sweep(self, lams: Sequence[float]) -> list[SweepRow]:
        """The rows of the runs for `lams`, trained or reused once each."""
        missing = [lam for lam in lams if float(lam) not in self._rows]
        if missing:
            data, _ = self.dataset("mnist")
            s = self.settings
            rows = lam_sweep(
                s.base_config(self.epochs),
                missing,
                data=data,
                in_memory=data.name == "synthetic",
                store=s.runs_dir,
                device=s.device,
                observer=self.observer,
            )
            self._rows |= {row.lam: row for row in rows}
        return [self._rows[float(lam)] for lam in lams]

    def subject(self) -> _Subject:
        """The model and image that parts 1 and 2 are checked on, and lines describing them."""
        if self._subject is not None:
            return self._subject
        s = self.settings
        if s.model is not None:
            run = load_run(s.model)
            model, label = run.model, f"{run.path} ({run.config.describe()})"
            data, note = self.dataset(run.config.dataset)
        else:
            (row,) = self.sweep((1.0,))
            assert row.model is not None
            model = row.model
            data, note = self.dataset("mnist")
            title = DATASET_TITLES.get(data.name, data.name)
            label = f"{row.run} (H={s.hidden}, lam=1, {epochs_text(self.epochs)}, {title})"
        x, what = pick_image(data, s.image)
        lines = [f"model: {label}", f"image: {what}", f"data: {note}"]
        if model.config.recon == "gaussian":
            lines.append("log p(x|z) is the loss's: minus the squared error, without the constant D/2 log π")
        self._subject = _Subject(model, x, lines, data.test.images[0:DECOMPOSITION_IMAGES])
        return self._subject

    def check(self, number: int, findings: Findings) -> None:
        """Add part `number`'s checks (or why they were skipped) and its context lines to `findings`."""
        s = self.settings
        if number == 3:
            rows = self.sweep(s.lams)
            _, note = self.dataset("mnist")
            c = s.base_config(self.epochs)
            layers = "-".join(map(str, c.model.hidden_layers))
            findings.sweep = sorted(rows, key=lambda r: r.lam)
            findings.context[3] = [
                f"runs: H={c.model.latent_dim}, layers {layers}, {epochs_text(c.epochs)} ({self.why}), seed {c.seed}, "
                f"one per λ; {sum(r.reused for r in rows)} of {len(rows)} reused",
                f"run store: {Path(rows[0].run).parent}" if rows[0].run != "in memory" else "trained in memory",
                f"data: {note}",
            ]
            findings.checks += identities.lagrangian_checks(rows)
            return
        subject = self.subject()
        findings.context[number] = subject.lines
        if number == 2:
            findings.checks += identities.kl_checks(subject.model, subject.image, seed=s.seed)
        elif number == 5 and subject.model.config.latent_dim != 2:
            findings.skipped.append(identities.quadrature_skipped(subject.model.config.latent_dim, number))
        elif subject.model.config.latent_dim > identities.MAX_LATENT_DIM:
            findings.skipped.append(identities.quadrature_skipped(subject.model.config.latent_dim, number))
        elif number == 4:
            findings.checks += identities.iw_checks(subject.model, subject.image, seed=s.seed)
        elif number == 5:
            findings.context[5] = subject.lines[:1] + [
                f"data: the first {len(subject.images)} test images, as the whole data set of the decomposition"
            ]
            findings.checks += decomposition_checks(subject.model, subject.images, seed=s.seed)
        else:
            findings.checks += identities.identity_checks(subject.model, subject.image, seed=s.seed)


def check_parts(
    settings: DeriveSettings | None = None,
    parts: Sequence[int] = derive.PART_NUMBERS,
    observer: SweepObserver | None = None,
) -> Findings:
    """Every check of `parts`, on the model and runs that `settings` name."""
    checks, findings = DeriveChecks(settings or DeriveSettings(), observer), Findings()
    for number in parts:
        checks.check(number, findings)
    return findings
