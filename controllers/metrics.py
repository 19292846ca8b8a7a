import gc
import hashlib
import hmac
import logging

from werkzeug.exceptions import NotFound

from odoo import SUPERUSER_ID, http
from odoo.http import request

from ..const import METRICS_ROUTE, METRICS_TOKEN_PARAM
from ..core import prometheus
from .webhook import _safe

_logger = logging.getLogger(__name__)


def token_digest(token):
    """What is stored and compared: the SHA-256 (hex) of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _presented_token(authorization):
    scheme, _space, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _without_cyclic_gc(compute):
    """``compute()`` with Python's cyclic garbage collector paused.

    A scrape makes some ten thousand short-lived objects (a few thousand series), all freed by
    reference counting when it ends. Left to run, the collector would now and then start a
    full collection in the middle of it: about 60 ms over the heap of an Odoo worker with its
    registry loaded, most of a scrape's p99 (see docs/BENCHMARKS.md). Paused, the scrape pays
    no collection and promotes none of its temporaries towards the next full one; the
    collector resumes as it was when the scrape ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return compute()
    finally:
        if was_enabled:
            gc.enable()


class IntegrationMetricsController(http.Controller):
    """Prometheus scrapes: the text exposition of every active connector's figures."""

    @http.route(
        METRICS_ROUTE,
        type="http",
        # No user: the bearer token set in Settings is the authentication.
        auth="none",
        methods=["GET"],
        csrf=False,
        save_session=False,
        # Only reads: a read-only cursor (a replica where Odoo is configured with one).
        readonly=True,
    )
    def integration_metrics(self, **_params):
        env = request.env(user=SUPERUSER_ID)
        expected = env["ir.config_parameter"].get_param(METRICS_TOKEN_PARAM)
        if not expected:
            # Disabled: answered as a route that does not exist, so a scanner learns nothing.
            raise NotFound()
        token = _presented_token(request.httprequest.headers.get("Authorization"))
        if token is None or not hmac.compare_digest(token_digest(token), expected):
            # The address only: never the header, which holds a token (right or wrong).
            _logger.warning(
                "Metrics scrape refused from %s: missing or wrong bearer token", _safe(request.httprequest.remote_addr)
            )
            return request.make_response(
                "Unauthorized: send the metrics token as 'Authorization: Bearer <token>'.\n",
                headers=[
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Bearer realm="integration_hub metrics"'),
                    ("Cache-Control", "no-store"),
                ],
                status=401,
            )
        body = _without_cyclic_gc(lambda: prometheus.render(env["integration.connector"]._prometheus_families()))
        return request.make_response(
            body, headers=[("Content-Type", prometheus.CONTENT_TYPE), ("Cache-Control", "no-store")]
        )
