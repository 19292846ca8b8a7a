"""Reading a request body against the clock, so that a trickling sender cannot hold a worker.

An Odoo HTTP worker serves one request at a time. A sender that declares a body and then
sends it a byte a second (slowloris) holds the worker for as long as it likes: the socket's
timeout (2 s in Odoo's workers) is per read, and each byte resets it. ``read_body`` reads
with at most one socket read per call (``read1``) and, between reads, holds the body to a
minimum pace: ``grace`` seconds, plus one second per ``min_rate`` bytes received so far
(Apache's mod_reqtimeout ``body=...,MinRate=...`` works the same way). A body behind that
pace is refused with ``WebhookBodyTimeout``; so is one that stops before its length.

Plain Python: no Odoo imports.
"""

import time

from .exceptions import WebhookBodyTimeout

# A sender's whole body usually arrives with its headers; one on a slow link gets this
# long, plus a second per BODY_MIN_RATE bytes (a 1 MiB body: 66 s at the slowest).
BODY_GRACE_SECONDS = 2.0
BODY_MIN_RATE = 16 * 1024
_CHUNK = 64 * 1024
# Once a delivery is answered without its whole body, how long the server's socket waits
# for the rest before the connection is dropped (see the webhook controller).
DRAIN_SECONDS = 0.1


def read_body(read1, length, grace=BODY_GRACE_SECONDS, min_rate=BODY_MIN_RATE, clock=time.monotonic, wait_at_most=None):
    """The ``length`` bytes of a body, read with ``read1(size)`` (one socket read at most).

    :param wait_at_most: called with the seconds the pace still allows before each read, to
        bound the socket's wait (a socket without a timeout, as in Odoo's threaded server,
        would otherwise wait for a stalled sender for ever)
    :raises WebhookBodyTimeout: the body fell behind the pace, stalled past the socket's
        own timeout, or ended before ``length`` bytes
    """
    started = clock()
    chunks = []
    received = 0
    while received < length:
        if wait_at_most is not None:
            wait_at_most(max(0.1, grace + received / min_rate - (clock() - started)))
        try:
            chunk = read1(min(length - received, _CHUNK))
        except TimeoutError:
            chunk = None
        if not chunk:
            raise WebhookBodyTimeout(
                f"the body stopped after {received} of its {length} bytes (Content-Length)"
            ) from None
        chunks.append(chunk)
        received += len(chunk)
        elapsed = clock() - started
        if received < length and elapsed > grace + received / min_rate:
            raise WebhookBodyTimeout(f"the body arrives too slowly: {received} of {length} bytes in {elapsed:.1f} s")
    return b"".join(chunks)
