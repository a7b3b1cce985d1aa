"""Errors that speak to the user.

Every error a user can cause (a misspelt model name, a checkpoint for another architecture, a bad
option) derives from :class:`FlexboneError`, so the command line can print its message as one line and
exit non-zero instead of showing a traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class FlexboneError(Exception):
    """Base class of the errors caused by user input."""


class UnknownModelError(FlexboneError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(FlexboneError):
    """A checkpoint that cannot be read, or that does not fit the model."""


class ConfigError(FlexboneError, ValueError):
    """An invalid option, recipe key or value."""


class ExportError(FlexboneError):
    """A model that cannot be exported, or an exported artifact that does not compute what the model does."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The entries of ``choices`` most similar to ``word`` (best first)."""
    choices = list(choices)
    hits = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not hits:  # prefix matches help with truncated names ("resnet5" -> resnet50 ...)
        hits = [c for c in choices if c.startswith(word)][:n]
    return hits


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    hits = closest(word, choices)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""
