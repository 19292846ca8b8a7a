"""A requests transport that connects only to addresses checked by ``urlsafety``.

urllib3 resolves and connects in one step (``create_connection``); the connection
classes below resolve with ``urlsafety.resolve`` instead, which checks every address,
and connect to those same addresses. TLS still verifies the certificate against the
host name, since only the socket is made here.
"""

import socket

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import _set_socket_options
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from .urlsafety import resolve


class _GuardedConnectionMixin:
    allow_private = False

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
