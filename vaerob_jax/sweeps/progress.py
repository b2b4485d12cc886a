"""The one progress display of the library: training steps, grid cells, model·examples.

A tqdm bar when the stream is a terminal; otherwise (CI logs, notebooks' captured output,
``nohup``) one line at most every ``min_interval_s`` seconds with the elapsed time and the
ETA, the first and the last always shown, e.g.::

    [train] 120/400 steps (0 resumed), elapsed 31s, ETA 1m12s, loss 41.2..57.9
    [run_grid] 3/12 cells (2 resumed), elapsed 4m05s, ETA 12m15s

The ETA counts only work done in this run (resumed steps or cells are not in the rate).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``'1h02m03s'``, ``'4m05s'`` or ``'12s'``; ``'?'`` when unknown."""
    if not np.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


class Progress:
    """Counts ``done`` out of ``total`` units and shows it with an ETA.

    Args:
      total: units in the whole job (steps, cells, model·examples).
      done: units already done before this run (resumed); they do not count in the rate.
      desc: the line's tag, e.g. ``"train"`` (written ``[train]``); ``""`` for none (when
        ``emit`` adds its own tag).
      unit: plural name of a unit, e.g. ``"steps"``.
      mode: ``"auto"``/True (a bar on a terminal, lines otherwise), ``"tqdm"``, ``"log"``
        (lines), ``"off"``/False.
      stream: where lines and the bar go (default stderr).
      min_interval_s: least seconds between two lines (the first and last always print).
      emit: writes one line instead of printing it to ``stream`` (e.g. a study's logger).
      first_line: print a line at once (the job's size and how much was resumed).
    """

    def __init__(
        self,
        total: int,
        *,
        done: int = 0,
        desc: str = "",
        unit: str = "units",
        mode: bool | str = "auto",
        stream: TextIO | None = None,
        min_interval_s: float = 5.0,
        emit: Callable[[str], None] | None = None,
        first_line: bool = False,
    ):
        self.total, self.resumed, self.done = int(total), int(done), int(done)
        self.desc, self.unit = desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.min_interval_s = float(min_interval_s)
        self.emit = emit
        if mode is True or mode == "auto":
            mode = "tqdm" if emit is None and self.stream.isatty() else "log"
        self.mode = mode or "off"
        if self.mode not in ("tqdm", "log", "off"):
            raise ValueError(f"progress must be bool, 'auto', 'tqdm', 'log' or 'off', got {mode!r}")
        self.t0 = time.perf_counter()
        self._last_line = -float("inf")
        self._bar = None
        if self.mode == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total, initial=self.done, desc=desc or None, unit="", file=self.stream
            )
        elif self.mode == "log" and first_line:
            self._print(self.t0, "")

    def eta_s(self, now: float) -> float:
        """Seconds left at the rate of this run; NaN before any unit finished."""
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        computed = self.done - self.resumed
        if computed <= 0:
            return float("nan")
        return (now - self.t0) / computed * remaining

    def update(self, done: int, postfix: str = "") -> None:
        """Sets the count of finished units to ``done``; ``postfix`` ends the line."""
        if self.mode == "off":
            return
        self.done = int(done)
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line < self.min_interval_s and self.done < self.total:
            return
        self._print(now, postfix)

    def advance(self, n: int = 1, postfix: str = "") -> None:
        """``n`` more units finished."""
        self.update(self.done + int(n), postfix)

    def _print(self, now: float, postfix: str) -> None:
        self._last_line = now
        tag = f"[{self.desc}] " if self.desc else ""
        line = (
            f"{tag}{self.done}/{self.total} {self.unit} ({self.resumed} resumed), "
            f"elapsed {format_duration(now - self.t0)}, ETA {format_duration(self.eta_s(now))}"
        )
        if postfix:
            line += f", {postfix}"
        if self.emit is not None:
            self.emit(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
