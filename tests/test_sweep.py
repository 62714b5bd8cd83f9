import math
from dataclasses import replace

import pytest
import torch

from vaecli.choices import MAX_JOBS
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.loop import train
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import save_state
from vaecli.store.runs import RunRequest, is_finished, run_folder, train_or_reuse
from vaecli.studies import sweep as sweep_module
from vaecli.studies.executors import FitContext, Stacked
from vaecli.studies.observer import SweepObserver
from vaecli.studies.sweep import (
    Sweep,
    SweepOptions,
    choose_executor,
    run_sweep,
    stacks_faster,
    table_rows,
)
from vaecli.views.ablation import report, to_csv, to_markdown

BASE = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(16,)), epochs=1, batch_size=32)


def cpu_options(**kwargs) -> SweepOptions:
    return SweepOptions(device="cpu", **kwargs)


class Seen(SweepObserver):
    """Records what the executors announce and which members they train."""

    def __init__(self, observers=None) -> None:
        self.fits, self.trained, self.observers = [], [], observers or {}

    def on_fits(self, indices, how, jobs) -> None:
        self.fits.append((list(indices), how, jobs))

    def observer(self, indices, configs):
        self.trained.append((list(indices), [c.lam for c in configs]))
        return self.observers.get(indices[0]) or super().observer(indices, configs)


def stacked_groups(configs, force, stack, device) -> list[list[int]]:
    """The groups that run_sweep would train stacked."""
    executor = choose_executor(SweepOptions(device="cpu", force=force, stack=stack), device, configs[0], len(configs))
    if not isinstance(executor, Stacked):
        return []
    waiting = {i: c for i, c in enumerate(configs) if not is_finished(c, run_folder(c), force)}
    return executor.groups(waiting, FitContext(data=None, force=force))


def test_members_are_the_cross_product_times_seeds():
    sweep = Sweep(BASE, hidden=(2, 10), lams=(1.0, 5.0), seeds=(0, 1))
    members = sweep.members()
    assert len(members) == 8
    assert [(m.model.latent_dim, m.lam, m.seed) for m in members[:3]] == [(2, 1.0, 0), (2, 1.0, 1), (2, 5.0, 0)]
    assert all(m.epochs == 1 and m.model.hidden_layers == (16,) for m in members)
    assert sweep.varies == ["H", "lam"]


def test_unlisted_settings_take_the_base():
    assert [m.model.latent_dim for m in Sweep(BASE, lams=(1.0, 40.0)).members()] == [2, 2]
    assert [m.lam for m in Sweep(BASE, hidden=(2, 50)).members()] == [1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden": (2, 2)}, "`latent_dim` lists a value twice"),
        ({"seeds": ()}, "at least one seed"),
    ],
)
def test_bad_sweeps_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Sweep(BASE, **kwargs)


def test_invalid_member_values_fail_before_training():
    with pytest.raises(ConfigError, match="`latent_dim` must be at least 1"):
        Sweep(BASE, hidden=(2, 0)).members()
    with pytest.raises(ConfigError, match="`lam` must be at least 0"):
        Sweep(BASE, lams=(-1.0,)).members()


def test_command_reproduces_the_sweep():
    sweep = Sweep(BASE, lams=(1.0, 5.0, 10.0, 40.0), seeds=(0, 1))
    assert sweep.command() == ("vaecli ablate --lam 1 5 10 40 --seeds 0 1 --epochs 1 --layers 16 --batch-size 32")
    assert sweep.name().startswith("ablate-lam1-5-10-40-e1-")
    assert Sweep(BASE, hidden=(2, 10)).name() != Sweep(BASE, hidden=(2, 25)).name()


def test_a_sweep_trains_once_then_reuses(tiny_mnist, tmp_path):
    data = load_dataset("mnist", tiny_mnist)
    sweep = Sweep(BASE, lams=(1.0, 10.0), seeds=(0, 1))
    seen = Seen()
    first = run_sweep(sweep, data, cpu_options(iw_samples=5, jobs=1), observer=seen)
    assert seen.trained == [([0], [1.0]), ([1], [1.0]), ([2], [10.0]), ([3], [10.0])]
    assert not any(m.reused for m in first) and all(m.path.is_dir() for m in first)
    second = run_sweep(sweep, data, cpu_options(iw_samples=5))
    assert all(m.reused for m in second)
    assert [m.metrics for m in second] == [m.metrics for m in first]

    rows = table_rows(second, sweep)
    assert [(r["H"], r["lam"], r["seeds"]) for r in rows] == [(2, 1.0, 2), (2, 10.0, 2)]
    kl = [m.metrics.kl for m in second[:2]]
    assert rows[0]["KL"] == pytest.approx(sum(kl) / 2) and rows[0]["KL_std"] > 0
    assert "iw5_nll" in rows[0] and len(rows[0]["kl_per_dim"]) == 2

    csv_text = to_csv(rows)
    assert csv_text.splitlines()[0].startswith("H,lam,seeds,recon,recon_std,KL,KL_std")
    markdown = to_markdown(rows)
    assert "| H | lam | seeds |" in markdown and " ± " in markdown
    text = report(sweep, rows, [("Random samples", "samples.png")])
    assert sweep.command() in text and "![Random samples](samples.png)" in text and "MNIST" in text


def test_one_seed_shows_active_units_out_of_h(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    sweep = Sweep(BASE, hidden=(2, 3))
    rows = table_rows(run_sweep(sweep, data, cpu_options(iw_samples=3)), sweep)
    assert rows[0]["active_units"].endswith("/2") and rows[1]["active_units"].endswith("/3")
    assert "KL_std" not in rows[0] and not math.isnan(rows[1]["neg_elbo"])


def test_a_stacked_sweep_saves_members_that_the_store_reuses(tiny_mnist, tmp_path):
    data = load_dataset("mnist", tiny_mnist)
    sweep = Sweep(BASE, hidden=(2, 3), lams=(1.0, 10.0))
    seen = Seen()
    together = run_sweep(sweep, data, cpu_options(iw_samples=3, stack="on"), observer=seen)
    assert seen.fits == [([0, 1, 2, 3], "stacked", 4)] and not any(m.reused for m in together)
    for m in together:
        outcome = train_or_reuse(RunRequest(m.config, device="cpu"), data=data)
        assert outcome.reused and outcome.run.path == m.path == run_folder(m.config)
        saved, trained = outcome.run.model.state_dict(), m.model.state_dict()
        assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    alone = run_sweep(sweep, data, cpu_options(store=tmp_path / "alone", iw_samples=3, stack="off"))
    for a, t in zip(alone, together, strict=True):
        assert t.metrics.neg_elbo == pytest.approx(a.metrics.neg_elbo, rel=1e-5)
        assert t.metrics.iw_nll == pytest.approx(a.metrics.iw_nll, rel=1e-5)


def test_only_members_that_need_training_stack(tiny_mnist, monkeypatch):
    data = load_dataset("mnist", tiny_mnist)
    configs = Sweep(BASE, lams=(1.0, 5.0, 10.0)).members()
    cpu = torch.device("cpu")
    assert stacked_groups(configs, False, "auto", cpu) == []  # the CPU: one by one (see stacks_faster)
    assert stacked_groups(configs, False, "off", cpu) == []
    train_or_reuse(RunRequest(configs[1], device="cpu"), data=data)
    assert stacked_groups(configs, False, "on", cpu) == [[0, 2]]
    assert stacked_groups(configs, True, "on", cpu) == [[0, 1, 2]]  # --force trains every member again
    monkeypatch.setattr(sweep_module, "stacks_faster", lambda device: True)
    assert stacked_groups(configs, False, "auto", cpu) == [[0, 2]]
    train_or_reuse(RunRequest(configs[0], device="cpu"), data=data)
    assert stacked_groups(configs, False, "on", cpu) == []  # a lone member trains as usual
    assert stacks_faster(torch.device("cuda")) and not stacks_faster(cpu)


def test_an_interrupted_member_resumes_instead_of_stacking(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    configs = Sweep(replace(BASE, epochs=2), lams=(1.0, 5.0, 10.0)).members()
    states = []
    train(configs[1], data, device="cpu", save_state=states.append)
    save_state(run_folder(configs[1]), states[0])  # as Ctrl-C after its first epoch leaves it
    cpu = torch.device("cpu")
    assert stacked_groups(configs, False, "on", cpu) == [[0, 2]]
    assert stacked_groups(configs, True, "on", cpu) == [[0, 1, 2]]  # --force starts it over


@pytest.mark.parametrize(
    "base, stack, message",
    [
        (BASE, "maybe", "`stack` must be one of auto, on, off; got 'maybe'"),
        (replace(BASE, compile=True), "on", "`stack` on cannot `compile`"),
    ],
)
def test_bad_stack_settings_are_refused(base, stack, message, tiny_mnist):
    with pytest.raises(ConfigError, match=message):
        run_sweep(Sweep(base, lams=(1.0, 5.0)), load_dataset("mnist", tiny_mnist), cpu_options(stack=stack))


def state_dicts_equal(a, b) -> bool:
    return all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_members_side_by_side_end_as_one_after_the_other(tiny_mnist, tmp_path):
    data = load_dataset("mnist", tiny_mnist)
    sweep = Sweep(replace(BASE, epochs=2), hidden=(2, 3), lams=(1.0, 5.0))
    threads = torch.get_num_threads()
    alone = run_sweep(sweep, data, cpu_options(store=tmp_path / "alone", iw_samples=5, jobs=1))
    seen = Seen()
    together = run_sweep(sweep, data, cpu_options(store=tmp_path / "together", iw_samples=5, jobs=2), observer=seen)
    assert seen.fits == [([0, 1, 2, 3], "side by side", 2)]
    assert all(state_dicts_equal(a, b) for a, b in zip(alone, together, strict=True))
    assert [m.metrics for m in alone] == [m.metrics for m in together]
    assert torch.get_num_threads() == threads  # the threads' share of the cores is given back


def test_ctrl_c_stops_members_side_by_side_and_the_same_sweep_continues(tiny_mnist, tmp_path):
    import os
    import signal
    import time

    from vaecli.engine.observer import Observer
    from vaecli.errors import Interrupted

    class CtrlC(Observer):
        def on_batch(self, epoch: int, step: int) -> None:
            if (epoch, step) == (2, 1):
                os.kill(os.getpid(), signal.SIGINT)
                # a busy machine may run the main thread's handler only after these tiny fits ended: hold this
                # one mid-fit until then, as a real fit is when Ctrl-C lands
                time.sleep(0.5)

    data = load_dataset("mnist", tiny_mnist)
    sweep = Sweep(replace(BASE, epochs=3), lams=(1.0, 5.0, 10.0))
    store = tmp_path / "store"
    with pytest.raises(Interrupted, match="run the same command again"):
        run_sweep(sweep, data, cpu_options(store=store, iw_samples=5, jobs=2), observer=Seen({0: CtrlC()}))
    assert (run_folder(sweep.members()[0], store) / "resume.safetensors").is_file()
    continued = run_sweep(sweep, data, cpu_options(store=store, iw_samples=5, jobs=2))
    alone = run_sweep(sweep, data, cpu_options(store=tmp_path / "alone", iw_samples=5, jobs=1))
    assert all(state_dicts_equal(a, b) for a, b in zip(alone, continued, strict=True))


def test_side_by_side_is_for_the_cpu(tiny_mnist):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    threads = torch.get_num_threads()
    expected = min(threads, MAX_JOBS, 4) if threads >= 2 else 1
    assert sweep_module.concurrent_jobs(None, cpu, BASE, 4) == expected
    assert sweep_module.concurrent_jobs(None, cpu, BASE, 1) == 1
    assert sweep_module.concurrent_jobs(None, cuda, BASE, 4) == 1
    assert sweep_module.concurrent_jobs(3, cpu, BASE, 2) == 2
    with pytest.raises(ConfigError, match="on cuda use `stack` on"):
        sweep_module.concurrent_jobs(2, cuda, BASE, 4)
    with pytest.raises(ConfigError, match="`jobs` cannot `compile`"):
        sweep_module.concurrent_jobs(2, cpu, replace(BASE, compile=True), 4)
    with pytest.raises(ConfigError, match="at least 1"):
        sweep_module.concurrent_jobs(0, cpu, BASE, 4)


def test_sweeps_keep_the_names_they_had_before_any_objective_option():
    then = TrainConfig(lr_schedule="constant")  # the recipe of then
    assert Sweep(then, lams=(1.0, 5.0, 10.0, 40.0)).name() == "ablate-lam1-5-10-40-e20-82647f77"
    assert Sweep(then, hidden=(2, 10, 25, 50)).name() == "ablate-h2-10-25-50-e20-de22e6aa"
    assert Sweep(then, lams=(1.0, 5.0)).command() == "vaecli ablate --lam 1 5 --lr-schedule constant"


def test_a_sweep_over_schedules_trains_each_at_its_own_rate_unless_one_is_given():
    sweep = Sweep(TrainConfig(), lams=(1.0, 5.0), vary=(("lr_schedule", ("constant", "onecycle")),))
    assert [(c.lam, c.lr_schedule, c.lr) for c in sweep.members()] == [
        (1.0, "constant", 1e-3),
        (1.0, "onecycle", 3e-3),
        (5.0, "constant", 1e-3),
        (5.0, "onecycle", 3e-3),
    ]
    assert sweep.command() == "vaecli ablate --lam 1 5 --lr-schedule constant onecycle"
    assert sweep.name().startswith("ablate-lam1-5-constant-onecycle-e20-")
    given = Sweep(TrainConfig(lr=3e-3), vary=(("lr_schedule", ("constant", "cosine")),))
    assert [c.lr for c in given.members()] == [3e-3, 3e-3]
    assert given.command() == "vaecli ablate --lr-schedule constant cosine --lr 0.003"


def test_a_setting_is_applied_whole_so_the_order_of_the_options_does_not_matter():
    sweep = Sweep(TrainConfig(), vary=(("k", (5, 50)), ("objective", ("iwae",))))  # k alone would be refused
    assert [(c.objective, c.k) for c in sweep.members()] == [("iwae", 5), ("iwae", 50)]
    assert sweep.varies == ["k", "objective"] and "--objective iwae --k 5 50" in sweep.command()
