"""Progress output that suits where it goes: live bars on a terminal, a few plain lines in a log.

On a terminal (stderr is a TTY) :func:`progress_bar` returns a :mod:`tqdm` bar. Written to a file or
a pipe (Nextflow's ``.command.log``, ``make demo > log 2>&1``) carriage-return updates would pile up
as thousands of lines, so there it returns a :class:`QuietProgress`: an iterator that writes one
plain line every ``interval`` seconds (and, with ``leave=True``, one when the loop ends). Callers
that log one line per unit of work themselves (e.g. one per epoch) ask :func:`is_live` first.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 60.0  # seconds between two lines of a quiet progress report


def is_live(enabled: bool = True, stream: TextIO | None = None) -> bool:
    """True when progress is wanted and ``stream`` (default: stderr) is a terminal."""
    s = sys.stderr if stream is None else stream
    try:
        return bool(enabled) and s.isatty()
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return False


class QuietProgress(Iterable[T]):
    """Iterate over ``iterable``, writing ``desc: n/total unit, t s [postfix]`` every ``interval`` seconds.

    ``interval=None``: no periodic lines. ``leave``: one line when the loop ends. ``enabled=False``:
    no output at all. Supports :meth:`set_postfix` like a tqdm bar.
    """

    def __init__(self, iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
                 enabled: bool = True, leave: bool = True, interval: float | None = DEFAULT_INTERVAL,
                 stream: TextIO | None = None) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else _length(iterable)
        self.unit = unit
        self.enabled = enabled
        self.leave = leave
        self.interval = interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.lines = 0

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, elapsed: float) -> None:
        if not self.enabled:
            return
        of = f"/{self.total}" if self.total is not None else ""
        tail = f" [{self.postfix}]" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{self.n}{of} {self.unit}, {elapsed:.0f} s{tail}", file=self.stream or sys.stderr, flush=True)
        self.lines += 1

    def __iter__(self) -> Iterator[T]:
        t0 = last = time.monotonic()
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()
            if self.interval is not None and now - last >= self.interval:
                self._line(now - t0)
                last = now
        if self.leave:
            self._line(time.monotonic() - t0)


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
                 enabled: bool = True, leave: bool = True, interval: float | None = DEFAULT_INTERVAL,
                 stream: TextIO | None = None, **tqdm_options: Any) -> Iterable[T]:
    """A tqdm bar over ``iterable`` on a terminal, else a :class:`QuietProgress` (see module docstring).

    ``enabled=False`` silences both. ``tqdm_options`` (e.g. ``initial``) go to tqdm only. The result
    iterates like ``iterable`` and has ``set_postfix(**values)``.
    """
    if is_live(enabled, stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream, **tqdm_options)
    return QuietProgress(iterable, desc=desc, total=total, unit=unit, enabled=enabled, leave=leave,
                         interval=interval, stream=stream)
