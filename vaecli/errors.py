"""Errors a user can fix. The message says what went wrong and what to do."""


class VaeError(Exception):
    """Base of every error that the CLI reports as one line."""


class ConfigError(VaeError):
    """A setting is out of range or of the wrong type."""


class DataError(VaeError):
    """The data set is missing, unreadable or malformed."""


class CheckpointError(VaeError):
    """A checkpoint or run folder is missing, corrupt or not from vaecli."""


class RunStoreError(VaeError):
    """The run store cannot hold or hand back the run asked for."""


class OutputError(VaeError):
    """A result cannot be written where it was asked to go."""
