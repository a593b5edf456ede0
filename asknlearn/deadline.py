"""A total deadline for a blocking call that has no overall timeout of its own.

MLflow's HTTP client has only a per-read timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT``): a server
that accepts, answers ``HTTP/1.1 200 OK`` and then sends one byte every few seconds never trips
it, and a cell would sit at its tracker for as long as one waits (issue 22, item 1). Python
cannot interrupt a thread blocked in a socket read, so :func:`call_with_deadline` runs the call
on a daemon worker thread and stops *waiting* for it when the deadline passes: the caller gets
:class:`DeadlineExceeded` and goes on (the tracker: untracked, ``asknlearn backfill`` later);
the abandoned worker dies with the process. A call that finishes in time returns its value or
re-raises its own exception, unchanged.

The caller must not touch what the abandoned call was using (the tracker stops using its
client for the rest of the run), since that call may still be running.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from asknlearn.errors import ConfigError

T = TypeVar("T")

# the total time one tracking call (with its retries) may take before the cell goes on untracked
DEADLINE_ENV = "ASKNLEARN_TRACKING_DEADLINE_S"
DEFAULT_DEADLINE_S = 60.0


class DeadlineExceeded(TimeoutError):
    """A call did not finish within its total deadline; it may still be running on its
    (daemon) worker thread, so whatever it used must not be used again."""

    def __init__(self, what: str, seconds: float):
        self.what, self.seconds = what, seconds
        super().__init__(f"{what} did not finish within its total deadline of {seconds:g} s "
                         f"(set {DEADLINE_ENV} to change it)")


def deadline_seconds(env: str = DEADLINE_ENV, default: float = DEFAULT_DEADLINE_S) -> float:
    """The deadline in seconds from ``$env`` (``default`` when unset or blank); one
    ConfigError line for a value that is not a finite number > 0."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{env}={raw!r} is not valid; valid: a number of seconds > 0, "
                          f"e.g. {default:g}")
    return value


def call_with_deadline(fn: Callable[[], T], seconds: float, what: str = "the call") -> T:
    """``fn()``, or :class:`DeadlineExceeded` once ``seconds`` have passed without it returning.

    ``fn`` runs on a daemon thread, so a call that never returns cannot keep the process alive
    at exit; its exception (any ``BaseException``) is re-raised here with its own traceback."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"deadline {seconds!r} is not a finite number of seconds > 0")
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller, who decides
            outcome["error"] = exc

    worker = threading.Thread(target=work, name=f"asknlearn-deadline: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DeadlineExceeded(what, seconds)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


class Deadline:
    """One total deadline shared by a sequence of calls (e.g. every store call of one
    ``backfill`` cell): each :meth:`call` gets only the time that is left."""

    def __init__(self, seconds: float, what: str = "the tracking store"):
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"deadline {seconds!r} is not a finite number of seconds > 0")
        self.seconds, self.what = seconds, what
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def call(self, fn: Callable[[], T], what: str | None = None) -> T:
        """``fn()`` within the time left; :class:`DeadlineExceeded` (naming the whole
        deadline) once none is left, without starting ``fn``."""
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded(what or self.what, self.seconds)
        try:
            return call_with_deadline(fn, left, what or self.what)
        except DeadlineExceeded:
            raise DeadlineExceeded(what or self.what, self.seconds) from None
