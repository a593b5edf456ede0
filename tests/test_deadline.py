"""asknlearn.deadline: a total deadline for a blocking call (issue 22, item 1)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from asknlearn.deadline import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE_S,
    Deadline,
    DeadlineExceeded,
    call_with_deadline,
    deadline_seconds,
)
from asknlearn.errors import AskNLearnError


def test_a_call_in_time_returns_its_value():
    assert call_with_deadline(lambda: 42, 5.0, "answer") == 42


def test_a_call_in_time_reraises_its_own_exception():
    class Boom(RuntimeError):
        pass

    def fail():
        raise Boom("no")

    with pytest.raises(Boom, match="no"):
        call_with_deadline(fail, 5.0)


def test_keyboard_interrupt_of_the_call_reaches_the_caller():
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_deadline(interrupted, 5.0)


def test_a_call_that_never_returns_raises_deadline_exceeded_and_leaves_a_daemon_thread():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        call_with_deadline(lambda: release.wait(60), 0.2, "start of the MLflow run")
    waited = time.monotonic() - started
    release.set()
    assert isinstance(info.value, TimeoutError)
    assert info.value.what == "start of the MLflow run" and info.value.seconds == 0.2
    assert "start of the MLflow run" in str(info.value) and DEADLINE_ENV in str(info.value)
    assert waited < 30  # it did not wait for the call (60 s)
    stuck = [t for t in threading.enumerate() if t.name.startswith("asknlearn-deadline")]
    assert all(t.daemon for t in stuck)


def test_a_trickling_socket_read_is_cut_by_the_total_deadline():
    """The case a per-read timeout misses: a peer that sends one byte at a time, each within
    the read timeout, never finishing."""
    a, b = socket.socketpair()
    a.settimeout(1.0)  # a per-read timeout, as MLflow sets one
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                b.send(b"x")
            except OSError:
                return
            stop.wait(0.1)

    def read_all() -> bytes:
        out = b""
        while True:
            chunk = a.recv(1)
            if not chunk:
                return out
            out += chunk

    threading.Thread(target=trickle, daemon=True).start()
    try:
        with pytest.raises(DeadlineExceeded):
            call_with_deadline(read_all, 0.5, "read")
    finally:
        stop.set()
        b.close()


def test_a_shared_deadline_gives_each_call_only_the_time_left():
    d = Deadline(0.5, "backfill of one cell")
    assert d.call(lambda: 1) == 1
    with pytest.raises(DeadlineExceeded) as info:
        d.call(lambda: time.sleep(5))
    assert info.value.seconds == 0.5 and "backfill of one cell" in str(info.value)
    assert d.expired
    ran = []
    with pytest.raises(DeadlineExceeded):
        d.call(lambda: ran.append(1))
    assert ran == []  # no time left: the call is not even started


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_deadline_must_be_a_finite_positive_number(bad):
    with pytest.raises(ValueError):
        call_with_deadline(lambda: None, bad)
    with pytest.raises(ValueError):
        Deadline(bad)


def test_deadline_from_the_environment(monkeypatch):
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    assert deadline_seconds() == DEFAULT_DEADLINE_S
    monkeypatch.setenv(DEADLINE_ENV, "2.5")
    assert deadline_seconds() == 2.5
    for bad in ("0", "-3", "abc", "nan", "inf"):
        monkeypatch.setenv(DEADLINE_ENV, bad)
        with pytest.raises(AskNLearnError, match=f"{DEADLINE_ENV}={bad!r} is not valid; valid: "):
            deadline_seconds()
