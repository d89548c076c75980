"""Progress reports that suit both a terminal and a cluster log.

On an interactive terminal :func:`progress` is a tqdm bar. When the stream is not a terminal (a Slurm
``.out`` file, CI, ``| tee``), tqdm's carriage-return redraws would pile up into megabytes of one
"line"; there :class:`PlainProgress` prints an ordinary line at most every ``interval`` seconds
(default 60, ``AFA_PROGRESS_INTERVAL``) and one at the end. ``AFA_PROGRESS=bar|plain|off`` overrides
the choice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

DEFAULT_INTERVAL = 60.0


def _format_seconds(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class PlainProgress:
    """The subset of tqdm's interface the code base uses, writing whole lines.

    A line reads ``<desc>: <n>/<total> (<pct>%) <elapsed> elapsed, <rate>, eta <eta> | k=v ...``.
    Lines are written when ``interval`` seconds have passed since the previous one, and at ``close``
    when ``leave`` (and anything happened). Nothing is written when ``disable``.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        desc: str = "",
        total: int | None = None,
        initial: int = 0,
        disable: bool = False,
        leave: bool = True,
        file: IO[str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Count ``iterable`` (or ``total`` steps) from ``initial``: a line every ``interval`` seconds on
        ``file``, none when ``disable``."""
        self.iterable = iterable
        self.desc = desc or "progress"
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # as tqdm
        self.total, self.n, self.start_n = total, initial, initial
        self.disable, self.leave, self.interval = disable, leave, interval
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.started = self.last_line = clock()
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        """The items, counting each."""
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        """The progress itself (``with progress(...) as bar``)."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Close: the final line."""
        self.close()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Values shown after the counts (the losses of training)."""
        items = {**(values or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; a line when the interval has passed."""
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self._write(now)

    def line(self, now: float | None = None) -> str:
        """The status line at time ``now`` (default the clock's)."""
        elapsed = (self.clock() if now is None else now) - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {count}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f" {_format_seconds(elapsed)} elapsed"
        if rate > 0:
            text += f", {1 / rate:.2f}s/it" if rate < 1 else f", {rate:.2f}it/s"
            if self.total and self.n < self.total:
                text += f", eta {_format_seconds((self.total - self.n) / rate)}"
        return text + (f" | {self.postfix}" if self.postfix else "")

    def _write(self, now: float) -> None:
        """Write the status line at ``now``."""
        self.last_line = now
        if not self.disable:
            self.file.write(self.line(now) + "\n")
            self.file.flush()

    def close(self) -> None:
        """Write the final line once."""
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n > self.start_n:
            self._write(self.clock())


def use_bar(stream: IO[str] | None = None) -> bool:
    """Whether to draw a tqdm bar: ``AFA_PROGRESS`` if set (``bar``/``plain``/``off``), else whether
    ``stream`` (default stderr, where tqdm writes) is an interactive terminal."""
    mode = os.environ.get("AFA_PROGRESS", "").strip().lower()
    if mode in ("bar", "plain", "off"):
        return mode == "bar"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm | PlainProgress:
    """A tqdm bar on a terminal, a :class:`PlainProgress` elsewhere (module docstring).

    Accepts tqdm's ``desc``, ``total``, ``initial``, ``disable``, ``leave`` and ``file``; other tqdm
    keywords (``dynamic_ncols``, ``position``) apply to the bar only.
    """
    stream = kwargs.get("file")
    if use_bar(stream):
        return tqdm(iterable, **kwargs)
    plain = {k: kwargs[k] for k in ("desc", "total", "initial", "disable", "leave", "file") if k in kwargs}
    if os.environ.get("AFA_PROGRESS", "").strip().lower() == "off":
        plain["disable"] = True
    interval = float(os.environ.get("AFA_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    return PlainProgress(iterable, interval=interval, **plain)
