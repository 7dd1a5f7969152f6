"""The one error type for user mistakes.

A `ScratchLMError` carries a message that names what is wrong and how to fix it. The CLI prints it as
one line and exits with code 2; library callers can catch it (it is a `ValueError`). Invariants that a
user cannot break use `assert` instead.
"""

from __future__ import annotations


class ScratchLMError(ValueError):
    """A user-facing error whose message says what is wrong and how to fix it."""
