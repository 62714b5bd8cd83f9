"""Studies: sweeps and the executors that train their members, test-set scores, derive's checks."""
