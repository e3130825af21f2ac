"""User-facing errors.

Every error a user can cause (a bad file, a bad config field, a missing tool) is raised as an
:class:`NmusicError` whose message names the file or field and says what to do. The ``nmusic``
command prints the message without a traceback and exits with status 2.
"""


class NmusicError(Exception):
    """An error caused by input the user can fix; the message says how."""


class DecodeError(NmusicError):
    """An audio file could not be decoded (or is unusable: empty, NaN, ...)."""


class FetchError(NmusicError):
    """An archive or Drive file could not be fetched."""


class UnsafeArchiveError(NmusicError):
    """An archive entry would be written outside the extraction folder."""


class ConfigError(NmusicError):
    """A config field has a bad name or value."""


class CheckpointError(NmusicError):
    """A checkpoint is missing, corrupt, or does not match the data/config."""


class TrainingDiverged(NmusicError):
    """A loss became NaN/inf; the last good checkpoint is kept."""
