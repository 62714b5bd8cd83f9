"""How the command's OpenMP threads wait (cli/threads.py): passive only beside other busy programs."""

import os
import subprocess
import sys

import pytest

from vaecli.cli import threads


def loadavg(tmp_path, runnable: int):
    path = tmp_path / "loadavg"
    path.write_text(f"1.50 1.20 0.90 {runnable}/312 4242\n")
    return path


def test_the_runnable_threads_besides_the_reader_are_read_from_loadavg(tmp_path):
    assert threads.others_running(loadavg(tmp_path, 1)) == 0  # the reader itself
    assert threads.others_running(loadavg(tmp_path, 4)) == 3
    assert threads.others_running(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("not a loadavg")
    assert threads.others_running(tmp_path / "odd") is None


def test_busy_means_other_threads_on_half_the_cpus_at_least(tmp_path):
    assert not threads.busy(2, loadavg(tmp_path, 1))
    assert threads.busy(2, loadavg(tmp_path, 2))  # one other thread on 2 CPUs
    assert not threads.busy(8, loadavg(tmp_path, 4)) and threads.busy(8, loadavg(tmp_path, 5))
    assert not threads.busy(2, tmp_path / "missing")  # no word from the system: as if idle


def test_a_users_own_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "LOADAVG", loadavg(tmp_path, 9))
    monkeypatch.setattr(threads, "chose_passive", False)
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "0")):
        for other in threads.WAIT_SETTINGS:
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        threads.choose_wait_policy()
        assert os.environ.get("OMP_WAIT_POLICY") == (value if name == "OMP_WAIT_POLICY" else None)
        assert not threads.chose_passive
    monkeypatch.delenv("KMP_BLOCKTIME")
    threads.choose_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and threads.chose_passive


@pytest.mark.skipif(not threads.LOADAVG.is_file(), reason="needs Linux's /proc/loadavg")
def test_beside_busy_programs_the_command_waits_passively_and_says_so(tiny_mnist):
    """Real spinning programs on every CPU, a real `vaecli train`: its threads sleep, and it says why."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_SETTINGS}
        command = [sys.executable, "-m", "vaecli", "train", "--epochs", "1", "--layers", "8", "--data-dir"]
        train = [*command, str(tiny_mnist), "--out", "run", "--precision", "fp32"]
        result = subprocess.run(train, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "threads sleep while they wait" in " ".join(result.stdout.split())
        mine = subprocess.run(
            [*train[:-4], "--out", "run2", "--precision", "fp32"],
            env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert mine.returncode == 0, mine.stderr
        assert "threads sleep" not in " ".join(mine.stdout.split())
    finally:
        for spinner in spinners:  # only the processes this test started, by PID
            spinner.kill()
            spinner.wait()
