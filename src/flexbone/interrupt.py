"""What Ctrl-C says: what was kept and how to continue.

A command wraps its long work in :func:`interrupt_note`; when a :class:`KeyboardInterrupt` passes out of
the block the note is recorded, and the command line's ``main()`` prints ``flexbone: interrupted`` followed
by the recorded notes (innermost first) and exits 130. SIGTERM is handled the same way (:class:`Terminated`, a
KeyboardInterrupt): ``flexbone: terminated``, the notes, exit 143::

    with interrupt_note(f"run folder {run_dir}; continue with: flexbone train --resume {run_dir}"):
        with interrupt_note(lambda: f"kept {len(rows)} evaluated rows in {csv}"):   # read at interrupt time
            ...

A note is a string or a function returning one, called when the interrupt happens (so a count is current).
The note object yielded by the block can also be changed as the work proceeds (``note.text = ...``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

_recorded: list[str] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler ending the job), raised where the process is as Ctrl-C's
    KeyboardInterrupt is, so that every block cleans up and leaves its note alike; the command line exits 143."""


def raise_terminated(signum: int, frame: object) -> None:
    """The command line's SIGTERM handler (installed when ``flexbone`` runs as a program)."""
    raise Terminated()


@dataclass
class Note:
    """The text shown if the block is interrupted (a string, or a function called at that moment)."""

    text: str | Callable[[], str]

    def render(self) -> str:
        try:
            return str(self.text()) if callable(self.text) else str(self.text)
        except Exception as e:  # noqa: BLE001 - a broken note must not hide the interrupt
            return f"(note unavailable: {type(e).__name__})"


@contextlib.contextmanager
def interrupt_note(text: str | Callable[[], str]) -> Iterator[Note]:
    """Record ``text`` for the interrupt message if a KeyboardInterrupt leaves the block."""
    note = Note(text)
    try:
        yield note
    except KeyboardInterrupt:
        rendered = note.render()
        if rendered:
            _recorded.append(rendered)
        raise


def clear_notes() -> None:
    """Forget the notes of an earlier interrupt (``main()`` calls this before each command)."""
    _recorded.clear()


def take_notes() -> list[str]:
    """The notes recorded by the last interrupt, innermost first, and forget them."""
    notes = list(dict.fromkeys(_recorded))  # the same note recorded twice is shown once
    _recorded.clear()
    return notes


def interrupted_message(how: str = "interrupted") -> str:
    """``flexbone: interrupted`` (or ``how``) and, one per line, what the interrupted blocks kept and how to
    continue."""
    return "\n".join([f"flexbone: {how}"] + [f"flexbone: {n}" for n in take_notes()])
