"""A requests transport that connects only to addresses checked by ``urlsafety``, and
holds each exchange to a total deadline.

urllib3 resolves and connects in one step (``create_connection``); the connection
classes below resolve with ``urlsafety.resolve`` instead, which checks every address,
and connect to those same addresses. TLS still verifies the certificate against the
host name, since only the socket is made here.

Connect and read timeouts bound each wait for a byte, not the exchange: a server that
trickles one byte every 20 s never trips a 30 s read timeout. Inside ``deadline(seconds)``
the sockets the thread's connections use are registered with one watchdog thread per
process, which shuts them down when the deadline passes; the blocked read then fails at
once and the caller learns the deadline expired (``Deadline.expired``).
"""

import heapq
import itertools
import os
import socket
import threading
import time
from contextlib import contextmanager, suppress

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import _set_socket_options
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from .urlsafety import resolve


class Deadline:
    """The deadline of one exchange: the sockets it uses, and whether it expired."""

    __slots__ = ("at", "expired", "sockets", "lock")

    def __init__(self, at):
        self.at = at
        self.expired = False
        self.sockets = []
        self.lock = threading.Lock()

    def watch(self, sock):
        with self.lock:
            if self.expired:
                _shutdown(sock)
            elif self.sockets is not None:
                self.sockets.append(sock)

    def expire(self):
        """Cut the exchange short, unless it has ended (its sockets then belong to the pool)."""
        with self.lock:
            if self.sockets is None:
                return
            self.expired = True
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock):
    with suppress(OSError):  # already closed: nothing left to stop
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that expires the deadlines due (a heap, one wake-up each)."""

    def __init__(self):
        self._heap = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._pid = None

    def add(self, deadline):
        with self._condition:
            if self._pid != os.getpid():  # started on first use, again in a forked worker
                threading.Thread(target=self._run, name="integration_hub deadlines", daemon=True).start()
                self._pid = os.getpid()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self._condition.notify()

    def _run(self):
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                at, _order, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
            deadline.expire()


_watchdog = _Watchdog()
_current = threading.local()


@contextmanager
def deadline(seconds):
    """Hold the exchanges of this thread inside the block to ``seconds`` in total; yields the
    ``Deadline`` (``expired`` tells whether it cut the exchange short)."""
    current = Deadline(time.monotonic() + seconds)
    _current.deadline = current
    _watchdog.add(current)
    try:
        yield current
    finally:
        _current.deadline = None
        with current.lock:
            current.sockets = None  # ended: the watchdog leaves its (pooled) sockets alone


@contextmanager
def time_limit(seconds):
    """A job's time limit: the exchanges of this thread inside the block end by it (each one's
    deadline is the earlier of its own total and what is left). See ``time_left``."""
    previous = getattr(_current, "limit", None)
    _current.limit = (time.monotonic() + seconds, seconds)
    try:
        yield
    finally:
        _current.limit = previous


def time_left():
    """``(seconds left, the limit)`` of the time limit this thread runs under, or None."""
    limit = getattr(_current, "limit", None)
    return None if limit is None else (limit[0] - time.monotonic(), limit[1])


def requests_sent():
    """How many requests this thread has sent through the guarded transport (a caller compares
    two readings to learn whether some code in between reached a remote)."""
    return getattr(_current, "sent", 0)


def _watch(sock):
    current = getattr(_current, "deadline", None)
    if current is not None and sock is not None:
        current.watch(sock)


class _GuardedConnectionMixin:
    allow_private = False

    def connect(self):
        result = super().connect()
        _watch(self.sock)
        return result

    def request(self, *args, **kwargs):
        _watch(self.sock)  # a pooled connection reused: its socket is watched too
        _current.sent = getattr(_current, "sent", 0) + 1
        return super().request(*args, **kwargs)

    def _new_conn(self):
        infos = resolve(self.host, self.port, allow_private=self.allow_private)
        error = None
        for family, socktype, proto, _canonname, sockaddr in infos:
            sock = None
            try:
                sock = socket.socket(family, socktype, proto)
                _set_socket_options(sock, self.socket_options)
                if self.timeout is not _DEFAULT_TIMEOUT:
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
                return sock
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                )
                error.__cause__ = exc
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to establish a new connection: {exc}")
                error.__cause__ = exc
            if sock is not None:
                sock.close()
        raise error


def _pool_classes(allow_private):
    http_conn = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), {})
    https_conn = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), {})
    http_conn.allow_private = https_conn.allow_private = allow_private
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


_POOL_CLASSES = {True: _pool_classes(True), False: _pool_classes(False)}


class GuardedAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose connections go only to checked addresses."""

    def __init__(self, allow_private=False, **kwargs):
        self.allow_private = allow_private
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        result = super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES[self.allow_private]
        return result
