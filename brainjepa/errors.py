"""User-facing errors: bad input that the user must fix, reported without a traceback."""


class InputError(ValueError):
    """Bad input. The message names the file, row or ROI and what is wrong."""


class TrainingError(Exception):
    """A training run that must stop (non-finite loss, incompatible resume); the message says why and where."""
