"""Exception and warning classes shared by the whole engine.

Every error a user can cause is a subclass of `DarwinError` (itself a `ValueError`), so the
CLI and the studio can show its message as a one-line reason and keep tracebacks for bugs.
"""


class DarwinError(ValueError):
    """A problem with the user's input: a parent, a genome, a setting or an output folder."""


class ParentError(DarwinError):
    """A parent reference or checkpoint cannot be used."""


class IncompatibleParentsError(ParentError):
    """Both parents load, but their tensors cannot be paired for a merge."""


class GenomeError(DarwinError):
    """A genome file or value is invalid."""


class SuiteError(DarwinError):
    """An evaluation suite is missing or malformed."""


class OutputError(DarwinError):
    """The child cannot be written to the requested folder."""


class HubError(DarwinError):
    """A Hugging Face Hub request failed for a reason the user can act on."""


class DarwinWarning(UserWarning):
    """A recoverable surprise: the message says what was done instead."""
