import json
import logging
import re
from datetime import datetime, timezone

from werkzeug.wrappers import Response

from odoo import SUPERUSER_ID, http
from odoo.http import RegistryError, request

from ..const import DATABASE_DOWN_RETRY_AFTER, PAUSED_RETRY_AFTER, WEBHOOK_ROUTE_PREFIX
from ..core.body import DRAIN_SECONDS, read_body
from ..core.exceptions import SignatureError, WebhookBodyTimeout
from ..core.textsafe import clean_text

_logger = logging.getLogger(__name__)

WEBHOOK_ROUTE = f"{WEBHOOK_ROUTE_PREFIX}/<string:code>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reply(status, payload, headers=None):
    return request.make_response(
        json.dumps(payload),
        headers=[("Content-Type", "application/json"), ("Cache-Control", "no-store"), *(headers or [])],
        status=status,
    )


def _unread_reply(status, payload, headers=None):
    """An answer given without reading the whole body.

    After answering, werkzeug's server discards what is left of the body until the sender
    pauses, reading with the socket's timeout (2 s in Odoo's workers): a sender that keeps
    trickling would hold the worker on, one that paused holds it 2 s. Past the answer,
    the connection waits DRAIN_SECONDS for more; whatever still comes is not read.
    """
    connection = _connection(request.httprequest)
    if connection is not None:
        try:
            connection.settimeout(DRAIN_SECONDS)
        except OSError:
            _logger.debug("Webhook connection already closed")
    return _reply(status, payload, headers)


def _connection(httprequest):
    """The request's socket, or None: Odoo's threaded server puts it in the environ (for
    websockets), its workers do not; there, it is the one behind the input file."""
    wrapped = getattr(httprequest, "_HTTPRequest__wrapped", None)  # Odoo 18 wraps werkzeug's request
    if wrapped is None:
        return None
    environ = wrapped.environ
    return environ.get("socket") or getattr(getattr(environ.get("wsgi.input"), "raw", None), "_sock", None)


def too_large_reply(code, limit):
    """The 413 answer, also given before routing for a form body (``ir.http``)."""
    _logger.warning("Webhook %s refused: body over %s bytes", _safe(code), limit)
    return _unread_reply(413, {"error": "too_large", "message": f"The body exceeds {limit} bytes."})


def body_timeout_reply(code, exc):
    """The 408 answer to a body that trickles or stops short (also given before routing)."""
    _logger.warning("Webhook %s refused: %s", _safe(code), exc)
    return _unread_reply(408, {"error": "timeout", "message": f"{exc}."})


def buffer_body(httprequest):
    """Read the body of a delivery (its Content-Length is known and within the limit) at
    a minimum pace (``core/body.py``), and keep it for ``get_data()`` and Odoo's form parser.

    :raises WebhookBodyTimeout: the body trickles, or stops before its length
    """
    # Odoo 18 wraps werkzeug's request; werkzeug's own stream reads until its buffer is
    # full, which a trickle stretches at will: the raw input is read one socket read at a time.
    wrapped = getattr(httprequest, "_HTTPRequest__wrapped", None)
    stream = wrapped.environ.get("wsgi.input") if wrapped is not None else None
    if getattr(wrapped, "_cached_data", None) is not None or not hasattr(stream, "read1"):
        return httprequest.get_data(cache=True)  # read already, or another server: as it comes
    # A socket without a timeout (Odoo's threaded server) would wait for a stalled sender for
    # ever: there, each read waits at most what the pace still allows. Odoo's workers give
    # their sockets a timeout of their own (2 s), which bounds each read already.
    connection = _connection(httprequest)
    unbounded = connection is not None and connection.gettimeout() is None
    try:
        body = read_body(
            stream.read1, httprequest.content_length, wait_at_most=connection.settimeout if unbounded else None
        )
    finally:
        if unbounded and connection.fileno() != -1:  # closed meanwhile: nothing follows
            connection.settimeout(None)  # as it was, for what follows on the connection
    wrapped._cached_data = body  # what get_data() and the form parser read from now on
    return body


def _safe(text, limit=200):
    """Sender-controlled text fit for one log line (no control character, no lone surrogate)."""
    return _CONTROL.sub(" ", clean_text(str(text)))[:limit]


def unavailable_when_database_down(serve_db):
    """Wrap ``Request._serve_db`` so that a webhook delivery that cannot reach the database
    is answered ``503`` with ``Retry-After``.

    Odoo serves a request whose registry cannot be opened (PostgreSQL restarting, a failover)
    without a database, where no route of an addon exists: the sender would get ``404``,
    which a sender reads as "this URL is gone" and stops delivering (proof_pg_restart saw
    1,403 of them over two restarts). Other paths keep Odoo's behaviour.
    """

    def _serve_db(self):
        try:
            return serve_db(self)
        except RegistryError:
            if not self.httprequest.path.startswith(WEBHOOK_ROUTE_PREFIX + "/"):
                raise
            _logger.warning("Webhook %s answered 503: the database is unreachable", _safe(self.httprequest.path))
            return Response(
                json.dumps({"error": "unavailable", "message": "The database is unreachable; try again later."}),
                status=503,
                headers=[
                    ("Content-Type", "application/json"),
                    ("Cache-Control", "no-store"),
                    ("Retry-After", str(DATABASE_DOWN_RETRY_AFTER)),
                ],
            )

    _serve_db.integration_webhook_wrapped = True
    return _serve_db


# Installed when the addon is imported: by the server before it forks its workers when it
# is started with the database (-d, or --load with the module), else by each worker the
# first time it loads the registry.
if not getattr(http.Request._serve_db, "integration_webhook_wrapped", False):
    http.Request._serve_db = unavailable_when_database_down(http.Request._serve_db)


class IntegrationWebhookController(http.Controller):
    """The inbox: verify, store once, queue, answer. Nothing else happens in the request."""

    @http.route(
        WEBHOOK_ROUTE,
        type="http",
        # No user to authenticate: the signature is the authentication.
        auth="none",
        methods=["POST"],
        csrf=False,
        save_session=False,
        # Odoo 18 runs auth="none" routes in a read-only transaction first, and again in a
        # read/write one when a write fails: every delivery writes, so start read/write.
        readonly=False,
        integration_webhook=True,
    )
    def integration_webhook(self, code, **_params):
        httprequest = request.httprequest
        env = request.env(user=SUPERUSER_ID)
        receiver = env["integration.connector"]._webhook_receiver(code)
        if receiver is None:
            return _unread_reply(404, {"error": "not_found", "message": "No active connector receives on this URL."})
        if receiver.webhook_paused:
            return _unread_reply(
                503,
                {"error": "paused", "message": "Deliveries are paused; try again later."},
                headers=[("Retry-After", str(PAUSED_RETRY_AFTER))],
            )
        limit = receiver.max_body_bytes
        if httprequest.content_length is None:
            # Webhook senders send a Content-Length; without one the size cannot be checked
            # before reading (and Odoo's request object offers no bounded read of the stream).
            return _unread_reply(411, {"error": "length_required", "message": "Send a Content-Length header."})
        if httprequest.content_length > limit:
            return too_large_reply(code, limit)
        try:
            body = buffer_body(httprequest)
        except WebhookBodyTimeout as exc:
            return body_timeout_reply(code, exc)
        if len(body) > limit:
            return too_large_reply(code, limit)
        Connector = env["integration.connector"]
        try:
            verified = Connector._webhook_verify(receiver, body, httprequest.headers)
        except SignatureError as exc:
            _logger.warning("Webhook %s refused from %s: %s", receiver.code, _safe(httprequest.remote_addr), _safe(exc))
            return _reply(401, {"error": "invalid_signature", "message": str(exc)})
        event_id, event_type = Connector._webhook_identify(receiver, body, httprequest.headers)
        signed_at = (
            datetime.fromtimestamp(verified.timestamp, tz=timezone.utc).replace(tzinfo=None)
            if verified.timestamp
            else None
        )
        record_id, created = env["integration.webhook.event"]._ingest(
            receiver,
            body,
            httprequest.headers,
            event_id,
            event_type,
            signed_at=signed_at,
            remote_addr=httprequest.remote_addr,
            # Committed at once on a connection of the inbox's own, before the answer. Not in
            # Odoo's test mode, where every request shares the test's transaction: there, an
            # event committed elsewhere would be invisible to the test, and outlive it.
            commit=not env.registry.in_test_mode(),
        )
        payload = {"status": "accepted" if created else "duplicate", "event_id": event_id, "reference": record_id}
        return _reply(202 if created else 200, payload)
