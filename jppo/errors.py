"""What a run reports when it cannot go on: one sentence and an exit code, never a traceback.

``UserError``: a mistake the user can fix before training (exit 2). ``RunFault``: a run that
stopped (an environment failed, a process stopped) with the exit code it chose. Every layer may
raise them; the CLIs print ``str(err)`` alone.
"""
from __future__ import annotations

import reprlib


class UserError(Exception):
    """A mistake the user can fix; the CLI prints the message alone and exits with code 2."""


class RunFault(Exception):
    """A run that cannot go on; ``str`` is one sentence, ``code`` the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


_BRIEF = reprlib.Repr()
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlevel = 60, 60, 2
_BRIEF.maxdict = _BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxset = 4


def brief(value) -> str:
    """``repr(value)`` cut to a sentence's length: a message must stay one readable line
    whatever the user typed (a 300-character name, an expanded YAML alias)."""
    return _BRIEF.repr(value)


__all__ = ["RunFault", "UserError", "brief"]
