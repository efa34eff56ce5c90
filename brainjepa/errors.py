"""User-facing errors: bad input that the user must fix, reported without a traceback."""


class InputError(ValueError):
    """Bad input. The message names the file, row or ROI and what is wrong."""


class TrainingError(Exception):
    """A training run that must stop (non-finite loss, incompatible resume); the message says why and where."""


class Preempted(TrainingError):
    """Training stopped by a signal (a scheduler's SIGTERM, SIGINT) after writing ``latest.pt``; rerun to go on."""

    exit_code = 75  # EX_TEMPFAIL: try again
