"""A sweep's members as Ray tasks on a cluster: `Cluster`, the executor behind `vaecli ablate --cluster`.

executor.py (Cluster, on the driver), connect.py (connecting as the driver),
coordinator.py (the actor between driver and tasks), worker.py (a member's task).

`Cluster` is imported on first use: the coordinator's actor process imports this
package on its way to coordinator.py, and must not load torch with the executor.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaecli.studies.cluster.executor import Cluster

__all__ = ["Cluster"]


def __getattr__(name: str) -> Any:
    if name == "Cluster":
        return importlib.import_module("vaecli.studies.cluster.executor").Cluster
    raise AttributeError(f"module 'vaecli.studies.cluster' has no attribute {name!r}")
