import ipaddress
import logging
import re
import threading
import time
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import psycopg2
import requests

from odoo import models

from ...core import transport
from ...core.backoff import parse_retry_after
from ...core.exceptions import (
    IntegrationCircuitOpenError,
    IntegrationConfigError,
    IntegrationConnectionError,
    IntegrationError,
    IntegrationHTTPError,
    IntegrationRateLimitedError,
    IntegrationTimeLimitError,
    SharedStateBusyError,
    UnsafeURLError,
    describe_transport_error,
)
from ...core.redact import QueryStringRedactingFilter, redact_url
from ...core.transport import GuardedAdapter
from ...core.urlsafety import address_problem, check_url
from ..integration_connector_metric import IntegrationConnectorMetric, method_class
from ..integration_connector_state import state_cursor

_logger = logging.getLogger(__name__)
# urllib3 logs request lines, query string included, at DEBUG level: mask secrets there.
logging.getLogger("urllib3.connectionpool").addFilter(QueryStringRedactingFilter())

# How much of a remote error body goes into a message shown to a user.
REMOTE_MESSAGE_LIMIT = 300
# Pooled sessions, one per (database, connector) in this process: connection reuse
# across calls. They hold no credentials (auth is applied per request).
_sessions = {}
_sessions_lock = threading.Lock()


def _get_session(dbname, connector_id, allow_private, verify_tls):
    """The pooled ``requests.Session`` of a connector in this process (no cookies, no proxy
    settings from the environment, connections only to addresses URL safety accepts)."""
    # verify_tls is part of the key: requests (< 2.32) reuses a pooled connection opened
    # with verify=False for later verified calls, so the two must never share a pool.
    key = (dbname, connector_id, allow_private, verify_tls)
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = requests.Session()
                # A connector is a machine client: no cookies carried from one call to the next.
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
                session.trust_env = False
                # Connections go only to addresses the URL-safety check accepted.
                adapter = GuardedAdapter(allow_private=allow_private, pool_maxsize=8)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                _sessions[key] = session
    return session


# Whitespace and control characters have no place in a request path (see _join_url).
_UNSAFE_PATH_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")


def _is_ip_literal(host):
    try:
        ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    return True


def _replayable(data, files):
    """Can this body be sent a second time? (A file or generator is consumed by the first.)"""
    return files is None and (data is None or isinstance(data, bytes | str | dict | list | tuple))


def _is_redirect(response):
    # Redirects are never followed (a Location may point anywhere); 304 answers a
    # conditional request and is not one.
    return 300 <= response.status_code < 400 and response.status_code != 304


class IntegrationConnector(models.Model):
    """The outbound call path: ``_request`` and what it is made of.

    Every call of the addon goes through ``_request``: URL safety, the shared breaker and
    rate limit, authentication, the guarded transport, bookkeeping, typed and redacted
    errors. ``_enqueue_call`` queues one call as a job.
    """

    _inherit = "integration.connector"

    def _request(
        self,
        method,
        path,
        *,
        params=None,
        json=None,  # noqa: A002 - same name as requests' argument on purpose
        data=None,
        files=None,
        headers=None,
        timeout=None,
        raise_for_status=True,
        operation=None,
        related=None,
        log_errors=True,
        health_probe=False,
    ):
        """Call the API; the one path every outbound call of this addon takes.

        Applies URL safety, the shared rate limit and circuit breaker, authentication,
        timeouts; counts the call in the hourly metrics; records failures in the error log.

        :param path: path under the base URL, or an absolute URL on the same host
        :param timeout: ``(connect, read)`` seconds overriding the connector's defaults
        :param operation: what is being done, for the error log (default "METHOD path")
        :param related: the Odoo record the call is about, linked from the error log
        :param log_errors: False for diagnostics (Test Connection) that report themselves
        :param health_probe: an active health probe (see ``integration.connector.probe``):
            it takes a rate slot without waiting, ignores and never moves the breaker, and
            is kept out of the call metrics (the probe history records it)
        :return: the ``requests.Response``
        :raises IntegrationError: typed, with secrets redacted from its message; inside a
            queue job, a retryable failure becomes ``RetryableJobError(seconds=...)``
            until the connector's attempts are spent
        """
        self.ensure_one()
        operation = operation or f"{method} {urlsplit(path or '/').path or '/'}"
        related = related or self._context_related()
        url = kwargs = None
        try:
            url = self._build_url(path)
            request_headers = self._parse_default_headers()
            request_headers.update(headers or {})
            kwargs = {
                "params": list(params.items() if isinstance(params, dict) else params or []),
                "json": json,
                "data": data,
                "files": files,
                "headers": request_headers,
                "timeout": timeout or (self.timeout_connect, self.timeout_read),
                "verify": self.verify_tls,
                "allow_redirects": False,
            }
            if not self.verify_tls:
                _logger.warning(
                    "Connector %s: calling %s without TLS certificate verification", self.code, redact_url(url)
                )
            response = self._send_authenticated(method, url, kwargs, health_probe, operation=operation)
            if response.status_code == 401 and _replayable(data, files) and self._auth_invalidate(response):
                # A cached token or assertion may have been revoked or expired early: one
                # fresh credential, one retry.
                _logger.info("Connector %s: 401 with cached credentials, retrying once with fresh ones", self.code)
                response = self._send_authenticated(method, url, kwargs, health_probe, operation=operation)
            if raise_for_status and (response.status_code >= 400 or _is_redirect(response)):
                raise self._http_error(method, url, response)
            return response
        except IntegrationError as error:
            raise self._handle_failure(error, method, url, operation, related, log_errors, kwargs) from None

    def _context_related(self):
        """The record a job is working for (context keys set by e.g. webhook processing)."""
        model = self.env.context.get("integration_related_model")
        record_id = self.env.context.get("integration_related_id")
        if model in self.env and record_id:
            return self.env[model].browse(record_id)
        return None

    def _send_authenticated(self, method, url, kwargs, health_probe=False, operation=None):
        """One HTTP exchange: admission (breaker, rate), auth, send, bookkeeping (``operation``
        names it in the call's log line)."""
        # The exchange's deadline: its total timeout, or what the running job's limit leaves
        # (nothing left: nothing is sent, no rate slot taken).
        total = self._total_timeout(kwargs["timeout"])
        limited = self._job_time_left(total)
        dbname = self.env.cr.dbname
        State = self.env["integration.connector.state"]
        # Credentials first (an OAuth2 token may need fetching): a failure there must not
        # leave a half-open probe admitted that never reports.
        call_kwargs = dict(kwargs, headers=dict(kwargs["headers"]), params=list(kwargs["params"]))
        self._sensitive_param_names()
        self._auth_apply(call_kwargs)
        with state_cursor(dbname) as cr:
            try:
                admission, reservation, state = State._admit(
                    cr, self, 0.0 if health_probe else self.rate_limit_max_wait, ignore_circuit=health_probe
                )
            except SharedStateBusyError as exc:
                raise IntegrationRateLimitedError(str(exc), retry_in=1.0) from None
            if not admission.allowed:
                IntegrationConnectorMetric._add(cr, self.id, "refused", 0, klass=method_class(method))
                raise IntegrationCircuitOpenError(
                    self.env._(
                        "Connector %(code)s: circuit open after repeated failures; no call sent. "
                        "Next try in %(seconds).0f s.",
                        code=self.code,
                        seconds=admission.retry_in,
                    ),
                    retry_in=admission.retry_in,
                )
            if reservation is not None and not reservation.granted:
                if not health_probe:
                    IntegrationConnectorMetric._add(cr, self.id, "refused", 0, klass=method_class(method))
                raise IntegrationRateLimitedError(
                    self.env._(
                        "Connector %(code)s: rate limit reached; no call sent. Next slot in %(seconds).1f s.",
                        code=self.code,
                        seconds=reservation.wait,
                    ),
                    retry_in=reservation.wait,
                )
        if reservation is not None and reservation.wait > 0:
            time.sleep(reservation.wait)  # our reserved slot: short by construction (max wait)
        session = _get_session(dbname, self.id, self.allow_private_network, self.verify_tls)
        started = time.monotonic()
        response = error = None
        try:
            with transport.deadline(limited or total) as deadline:
                response = session.request(method, url, **call_kwargs)
        except requests.exceptions.RequestException as exc:
            error = self._connection_error(method, url, exc, total if deadline.expired else None)
            if deadline.expired and limited:
                error = self._time_limit_error(method, url, sent=True)
        except UnsafeURLError as exc:
            error = IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: %(url)s refused: %(reason)s", code=self.code, url=redact_url(url), reason=exc
                )
            )
        latency_ms = (time.monotonic() - started) * 1000
        # A success changes nothing while the breaker was quietly closed when we were admitted.
        breaker_was_quiet = state["circuit_state"] == "closed" and not state["circuit_failures"]
        try:
            self._account_call(
                method,
                url,
                response,
                error,
                latency_ms,
                call_kwargs,
                breaker_was_quiet,
                admission.is_probe,
                health_probe=health_probe,
                operation=operation,
            )
        except (psycopg2.Error, SharedStateBusyError) as exc:
            # The exchange happened: losing its bookkeeping must not lose its result (a
            # retried POST would run twice at the partner).
            _logger.warning("Connector %s: could not record a call's outcome: %s", self.code, exc)
        if error is not None:
            raise error
        return response

    def _build_url(self, path):
        """The absolute URL of ``path`` under the base URL, checked before anything is sent."""
        url = self._join_url(path)
        self._check_outbound_url(url)
        return url

    def _check_outbound_url(self, url):
        """Scheme and, for IP literals, address checks before anything is sent.

        Host names are checked when the connection is made (``core.transport``), on the
        addresses actually connected to; this early check gives the clear error sooner.
        """
        try:
            check_url(url, allow_http=self.allow_http)
            host = urlsplit(url).hostname
            if not self.allow_private_network and _is_ip_literal(host) and address_problem(host):
                raise UnsafeURLError(f"{host} is a {address_problem(host)} address")
        except UnsafeURLError as exc:
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: %(url)s refused: %(reason)s", code=self.code, url=redact_url(url), reason=exc
                )
            ) from None

    def _join_url(self, path):
        """Join ``path`` to the base URL; refuse control characters and any other scheme or host."""
        base = (self.base_url or "").rstrip("/") + "/"
        if not path:
            return base
        if _UNSAFE_PATH_CHARACTERS.search(path):
            # urlsplit strips or drops these, which can turn " //evil.example" into a host.
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: the path %(path)r contains spaces or control characters.",
                    code=self.code,
                    path=redact_url(path)[:200],
                )
            )
        url = path if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) else urljoin(base, path.lstrip("/"))
        target, root = urlsplit(url), urlsplit(base)
        if (target.scheme, target.netloc) != (root.scheme, root.netloc):
            # Credentials go only to the connector's own host, whatever the path holds.
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s only calls %(root)s, not %(url)s.",
                    code=self.code,
                    root=f"{root.scheme}://{root.netloc}",
                    url=redact_url(url),
                )
            )
        return url

    def _remote_message(self, response):
        """The start of the remote's answer, redacted, for a message a person reads."""
        return self._redact(response.text or "", limit=REMOTE_MESSAGE_LIMIT)

    def _http_error(self, method, url, response):
        """The typed error of an HTTP error status (or a redirect), with the remote's words and Retry-After."""
        safe_url = redact_url(url, self._sensitive_param_names())
        remote = self._remote_message(response)
        if _is_redirect(response):
            remote = self.env._(
                "redirected to %(location)s (redirects are not followed: fix the base URL or path)",
                location=redact_url(response.headers.get("Location", "?"), self._sensitive_param_names()),
            )
        return IntegrationHTTPError(
            self.env._(
                "%(method)s %(url)s failed: HTTP %(status)s %(reason)s%(remote)s",
                method=method,
                url=safe_url,
                status=response.status_code,
                reason=response.reason or "",
                remote=f": {remote}" if remote else "",
            ),
            status_code=response.status_code,
            method=method,
            url=safe_url,
            remote_message=remote,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _job_time_left(self, total):
        """Seconds the running job's time limit leaves this call when shorter than ``total``
        (else None); raises when nothing is left, before anything is sent."""
        left = transport.time_left()
        if left is None or left[0] >= total:
            return None
        if left[0] <= 0:
            raise self._time_limit_error(None, None, sent=False)
        return left[0]

    def _time_limit_error(self, method, url, sent):
        limit = transport.time_left()[1]
        if not sent:
            return IntegrationTimeLimitError(
                self.env._(
                    "Connector %(code)s: the job timed out after %(limit)s s (its time limit); no call sent.",
                    code=self.code,
                    limit=f"{limit:g}",
                )
            )
        return IntegrationTimeLimitError(
            self.env._(
                "%(method)s %(url)s: the job timed out after %(limit)s s (its time limit) before the answer ended",
                method=method,
                url=redact_url(url, self._sensitive_param_names()),
                limit=f"{limit:g}",
            )
        )

    def _total_timeout(self, timeout):
        """Seconds a whole exchange may take: the connector's *Total Timeout*, else the
        call's connect and read timeouts added up."""
        if self.timeout_total > 0:
            return self.timeout_total
        return sum(timeout) if isinstance(timeout, tuple | list) else float(timeout)

    def _connection_error(self, method, url, exc, deadline=None):
        """The typed error of a transport failure, with its root cause in words (refused, TLS,
        timeout; ``deadline``: the total timeout in seconds, when it cut the exchange short)."""
        safe_url = redact_url(url, self._sensitive_param_names())
        if deadline is not None:
            reason = self.env._("timed out after %s s (no complete answer within the total timeout)", f"{deadline:g}")
        elif isinstance(exc, requests.exceptions.SSLError):
            reason = self.env._("TLS error (certificate not trusted or handshake failed)")
        elif isinstance(exc, requests.exceptions.ConnectTimeout):
            reason = self.env._("connection timed out after %s s", self.timeout_connect)
        elif isinstance(exc, requests.exceptions.ReadTimeout):
            reason = self.env._("no answer within %s s", self.timeout_read)
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = self.env._("connection failed")
        else:
            reason = self.env._("request failed")
        detail = self._redact(describe_transport_error(exc), limit=REMOTE_MESSAGE_LIMIT)
        # The URL inside requests' own message may carry a query-string key: scrub it too.
        detail = detail.replace(url, safe_url)
        return IntegrationConnectionError(
            self.env._(
                "%(method)s %(url)s: %(reason)s (%(detail)s)", method=method, url=safe_url, reason=reason, detail=detail
            )
        )

    def _enqueue_call(self, method, path, *, params=None, json=None, operation=None, priority=None, eta=None):
        """Queue one outbound call as a job (channel: the job function's, ``root.integration.outbound``
        unless an integrator changed it, or the connector's own *Job Channel*).

        The job retries transient failures per the connector's policy. Its arguments are
        the call's business data only: credentials are applied when it runs.
        """
        self.ensure_one()
        return self.with_delay(
            **self._job_delay_params(),
            description=self.env._(
                "%(connector)s: %(operation)s", connector=self.name, operation=operation or f"{method} {path}"
            ),
            # A safety net above the connector's own limit, which decides (see _handle_failure).
            max_retries=self.retry_max_attempts + 1,
            priority=priority,
            eta=eta,
        )._job_call(method, path, params=params, json=json, operation=operation)

    def _job_call(self, method, path, params=None, json=None, operation=None):  # noqa: A002
        """Queue job entry point: one call through ``_request``, within the job time limit."""
        with transport.time_limit(self._job_time_limit()):
            response = self._request(method, path, params=params, json=json, operation=operation)
        return f"HTTP {response.status_code}"

    def _job_time_limit(self):
        """Seconds one of this connector's jobs may run (see *Job Time Limit*)."""
        self.ensure_one()
        return self.job_time_limit or max(60.0, 4 * (self.timeout_connect + self.timeout_read))
