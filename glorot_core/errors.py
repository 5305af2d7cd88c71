"""Exceptions that glorot_core raises on purpose, so callers (CLI, worker) can tell them apart."""


class GlorotError(Exception):
    """Base class of glorot_core's own errors."""


class Cancelled(GlorotError):
    """The run's cancellation check returned True; raised between training steps."""


class DataUnavailable(GlorotError):
    """A data set's files are missing or malformed (we never download at run time)."""


class SpecNotRunnable(GlorotError):
    """A valid spec that this installation cannot run (e.g. device 'cuda' without CUDA)."""
