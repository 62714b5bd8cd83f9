"""How the command's OpenMP threads wait, chosen before any command imports torch.

libgomp's threads spin a while after each parallel region before they sleep. On a
machine to itself that is the fastest; beside another busy program (a second vaecli
in another terminal, a sweep, a shared lab machine) the spinning takes the cores the
other needs, and both slow down several times over. Sleeping at once
(OMP_WAIT_POLICY=PASSIVE) cost a fit alone 19 to 57 % on the 2-core machine of the
benchmarks (each wake-up is slow there), so vaecli waits passively only when other
programs keep the CPUs busy as it starts (benchmarks/bench_wait.py measures both).
"""

import os
import time
from pathlib import Path

# who tells OpenMP how its idle threads wait: a user's own setting of any of them wins over vaecli's
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
LOADAVG = Path("/proc/loadavg")  # Linux: its 4th field is "runnable/all" threads right now
LOOKS = 3  # readings of a busy machine, 5 ms apart, before it counts as busy: a lone blip does not

chose_passive = False  # whether vaecli chose PASSIVE for this process (the training display says so)


def others_running(loadavg: Path | None = None) -> int | None:
    """How many threads besides the reader the kernel has runnable now, or None where it does not say."""
    try:
        running = int((loadavg or LOADAVG).read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0, running - 1)


def busy(cpus: int | None = None, loadavg: Path | None = None) -> bool:
    """Whether other programs keep at least half the CPUs (one, at least) busy, in each of LOOKS readings."""
    need = max(1, (cpus or os.cpu_count() or 1) // 2)
    for look in range(LOOKS):
        others = others_running(loadavg)
        if others is None or others < need:
            return False
        if look < LOOKS - 1:
            time.sleep(0.005)
    return True


def choose_wait_policy() -> None:
    """OMP_WAIT_POLICY=PASSIVE when the CPUs are busy with other programs, unless the user chose a policy."""
    global chose_passive
    if not any(name in os.environ for name in WAIT_SETTINGS) and busy():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        chose_passive = True
