"""Errors a user can fix. The message says what went wrong and what to do."""


class VaeError(Exception):
    """Base of every error that the CLI reports as one line."""

    exit_code = 1  # what the CLI exits with after printing the line


class ConfigError(VaeError):
    """A setting is out of range or of the wrong type."""


class DataError(VaeError):
    """The data set is missing, unreadable or malformed."""


class CheckpointError(VaeError):
    """A checkpoint or run folder is missing, corrupt or not from vaecli."""


class RunStoreError(VaeError):
    """The run store cannot hold or hand back the run asked for."""


class RunBusy(RunStoreError):
    """Another process is training the run asked for, and the wait for it ran out."""


class OutputError(VaeError):
    """A result cannot be written where it was asked to go."""


class TrainingDiverged(VaeError):
    """The loss became NaN or infinite; training stopped before saving the bad weights."""


class Interrupted(VaeError):
    """Training was stopped by Ctrl-C after a batch; its state was saved to resume from."""

    exit_code = 130  # the shell's code for a process ended by SIGINT


class OutOfMemory(VaeError):
    """A fit needs more memory than the device has: estimated before training, or the allocator failed."""


class MissingExtra(VaeError):
    """A feature needs an optional package that is not installed; the message names the extra to install."""
