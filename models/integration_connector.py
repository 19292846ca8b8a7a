import base64
import json
import logging
import re
import threading
import time
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import requests

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..core.exceptions import (
    IntegrationAuthError,
    IntegrationConfigError,
    IntegrationConnectionError,
    IntegrationError,
    IntegrationHTTPError,
    describe_transport_error,
)
from ..core.redact import QueryStringRedactingFilter, redact_text, redact_url, register_sensitive_name
from .integration_secret_mixin import MANAGER_GROUP, secret_fields

_logger = logging.getLogger(__name__)
# urllib3 logs request lines, query string included, at DEBUG level: mask secrets there.
logging.getLogger("urllib3.connectionpool").addFilter(QueryStringRedactingFilter())

CODE_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
# How much of a remote error body goes into a message shown to a user.
REMOTE_MESSAGE_LIMIT = 300

# Pooled sessions, one per (database, connector) in this process: connection reuse
# across calls. They hold no credentials (auth is applied per request).
_sessions = {}
_sessions_lock = threading.Lock()


def _get_session(dbname, connector_id):
    key = (dbname, connector_id)
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = requests.Session()
                # A connector is a machine client: no cookies carried from one call to the next.
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
                session.trust_env = False
                _sessions[key] = session
    return session


class IntegrationConnector(models.Model):
    """One external API: where it is, how to authenticate, how to call it.

    Concrete connectors (a shop, a partner ERP) extend this model the way payment
    providers extend ``payment.provider``: add a value to ``kind`` and override the
    methods that dispatch on it, calling ``super()`` for the other kinds.
    """

    _name = "integration.connector"
    _description = "Integration Connector"
    _inherit = ["mail.thread", "mail.activity.mixin", "integration.secret.mixin"]
    _order = "sequence, name, id"

    name = fields.Char(required=True, tracking=True, translate=False)
    code = fields.Char(
        required=True,
        tracking=True,
        help="Short identifier used in URLs (webhooks: /integration/webhook/<code>): "
        "lowercase letters, digits, '-' and '_'.",
    )
    active = fields.Boolean(default=True, tracking=True)
    sequence = fields.Integer(default=10)
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company, tracking=True
    )
    kind = fields.Selection(
        selection=[("generic_rest", "Generic REST API")],
        required=True,
        default="generic_rest",
        tracking=True,
        help="What is on the other side. Addons add their own kinds and handlers.",
    )
    base_url = fields.Char(
        string="Base URL", required=True, tracking=True, help="Root of the API, e.g. https://api.example.com/v2"
    )
    notes = fields.Html()

    # Authentication
    auth_type = fields.Selection(
        selection=[
            ("none", "None"),
            ("api_key", "API Key"),
            ("bearer", "Bearer Token"),
            ("basic", "HTTP Basic"),
            ("oauth2", "OAuth2"),
        ],
        string="Authentication",
        required=True,
        default="none",
        tracking=True,
    )
    api_key_location = fields.Selection(
        selection=[("header", "Header"), ("query", "Query Parameter")],
        default="header",
        string="API Key In",
    )
    api_key_name = fields.Char(
        string="API Key Header/Parameter", default="X-API-Key", help="Header or query parameter name carrying the key."
    )
    api_key, api_key_encrypted, api_key_is_set = secret_fields("API Key")
    bearer_token, bearer_token_encrypted, bearer_token_is_set = secret_fields("Bearer Token")
    basic_username = fields.Char(string="Username", groups=MANAGER_GROUP)
    basic_password, basic_password_encrypted, basic_password_is_set = secret_fields("Password")
    oauth2_grant_type = fields.Selection(
        selection=[("client_credentials", "Client Credentials")],
        string="OAuth2 Grant",
        default="client_credentials",
    )
    oauth2_token_url = fields.Char(string="Token URL")
    oauth2_client_id = fields.Char(string="Client ID", groups=MANAGER_GROUP)
    oauth2_client_secret, oauth2_client_secret_encrypted, oauth2_client_secret_is_set = secret_fields("Client Secret")
    oauth2_scope = fields.Char(string="Scope", help="Space-separated scopes, when the server wants them.")
    oauth2_audience = fields.Char(string="Audience", help="Sent as 'audience' when the server needs one.")
    oauth2_client_auth = fields.Selection(
        selection=[("basic", "HTTP Basic (client_secret_basic)"), ("body", "Request body (client_secret_post)")],
        string="Client Authentication",
        default="basic",
    )
    oauth2_token_ids = fields.One2many("integration.oauth.token", "connector_id", string="OAuth2 Tokens")

    # Request defaults
    timeout_connect = fields.Float(string="Connect Timeout (s)", default=5.0)
    timeout_read = fields.Float(string="Read Timeout (s)", default=30.0)
    default_headers = fields.Text(
        help='JSON object of headers sent with every call, e.g. {"Accept": "application/json"}.'
    )
    verify_tls = fields.Boolean(
        string="Verify TLS Certificates",
        default=True,
        tracking=True,
        help="Leave on. Turn off only for a partner server with a self-signed certificate; "
        "every call through this connector is then logged with a warning.",
    )
    health_path = fields.Char(default="/", help="Path (under the base URL) that 'Test Connection' calls with GET.")

    # Status
    health_state = fields.Selection(
        selection=[("unknown", "Unknown"), ("ok", "Healthy"), ("failing", "Failing")],
        string="Health",
        default="unknown",
        readonly=True,
        copy=False,
        tracking=True,
    )
    last_test_at = fields.Datetime(string="Last Tested", readonly=True, copy=False)
    last_test_status_code = fields.Integer(string="Last Status", readonly=True, copy=False)
    last_test_latency_ms = fields.Integer(string="Last Latency (ms)", readonly=True, copy=False)
    last_test_message = fields.Char(string="Last Result", readonly=True, copy=False)
    color = fields.Integer(compute="_compute_color")

    _sql_constraints = [
        ("code_uniq", "unique(code)", "Another connector already uses this code."),
        ("timeout_connect_positive", "CHECK(timeout_connect > 0)", "The connect timeout must be positive."),
        ("timeout_read_positive", "CHECK(timeout_read > 0)", "The read timeout must be positive."),
    ]

    @api.depends("health_state")
    def _compute_color(self):
        colors = {"ok": 10, "failing": 1}
        for connector in self:
            connector.color = colors.get(connector.health_state, 0)

    @api.constrains("code")
    def _check_code(self):
        for connector in self:
            if not CODE_PATTERN.match(connector.code or "") or len(connector.code) > 64:
                raise ValidationError(
                    self.env._(
                        "Code %(code)r is not valid: use 1 to 64 lowercase letters and digits, "
                        "separated by single '-' or '_' (for example 'shop-eu').",
                        code=connector.code,
                    )
                )

    @api.constrains("base_url", "oauth2_token_url")
    def _check_urls(self):
        for connector in self:
            connector._validate_http_url(connector.base_url, connector._fields["base_url"].string)
            if connector.oauth2_token_url:
                connector._validate_http_url(connector.oauth2_token_url, connector._fields["oauth2_token_url"].string)

    @api.model
    def _validate_http_url(self, url, label):
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                self.env._(
                    "%(field)s must be an absolute http:// or https:// URL, got %(url)r.",
                    field=label,
                    url=redact_url(url),
                )
            )
        if parts.username or parts.password:
            raise ValidationError(
                self.env._("%(field)s must not contain credentials: use the Authentication settings.", field=label)
            )

    @api.constrains("default_headers")
    def _check_default_headers(self):
        for connector in self:
            connector._parse_default_headers()

    @api.constrains("auth_type", "api_key_name", "oauth2_token_url")
    def _check_auth_settings(self):
        for connector in self:
            if connector.auth_type == "api_key" and not (connector.api_key_name or "").strip():
                raise ValidationError(self.env._("API Key Header/Parameter is required for API key authentication."))
            if connector.auth_type == "oauth2" and not connector.oauth2_token_url:
                raise ValidationError(self.env._("Token URL is required for OAuth2 authentication."))

    @api.constrains("verify_tls")
    def _check_verify_tls(self):
        for connector in self.filtered(lambda c: not c.verify_tls):
            _logger.warning(
                "TLS certificate verification disabled on connector %s (%s) by %s",
                connector.code,
                connector.id,
                self.env.user.login,
            )

    @api.model_create_multi
    def create(self, vals_list):
        connectors = super().create(vals_list)
        self.env["integration.oauth.token"].sudo().create([{"connector_id": c.id} for c in connectors])
        return connectors

    def copy_data(self, default=None):
        vals_list = super().copy_data(default=default)
        default = default or {}
        for connector, vals in zip(self, vals_list, strict=True):
            if "code" not in default:
                vals["code"] = f"{connector.code}-copy"
            if "name" not in default:
                vals["name"] = self.env._("%s (copy)", connector.name)
        return vals_list

    # ------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------

    def action_test_connection(self):
        """Button: GET the health path and report status, latency and error."""
        self.ensure_one()
        result = self._test_connection()
        if result["ok"]:
            notification_type = "success"
            title = self.env._("Connection OK")
        else:
            notification_type = "danger"
            title = self.env._("Connection failed")
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": title,
                "message": result["message"],
                "type": notification_type,
                "sticky": not result["ok"],
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_rotate_secrets(self):
        """Button (managers): re-encrypt every connector secret with the current key."""
        self.check_access("write")
        count = self.env["integration.connector"]._rotate_secrets()
        count += self.env["integration.oauth.token"]._rotate_secrets()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Secrets re-encrypted"),
                "message": self.env._("%s secret(s) re-encrypted with the current key.", count),
                "type": "success",
            },
        }

    # ------------------------------------------------------------------------------
    # Business methods: the call path
    # ------------------------------------------------------------------------------

    def _test_connection(self):
        self.ensure_one()
        started = time.monotonic()
        status_code = 0
        try:
            response = self._request("GET", self.health_path or "/", raise_for_status=False)
            status_code = response.status_code
            ok = response.ok
            if ok:
                message = self.env._("HTTP %(status)s %(reason)s", status=status_code, reason=response.reason or "")
            else:
                message = self.env._(
                    "HTTP %(status)s %(reason)s: %(body)s",
                    status=status_code,
                    reason=response.reason or "",
                    body=self._remote_message(response) or self.env._("(empty body)"),
                )
        except (IntegrationError, UserError) as exc:
            ok = False
            message = str(exc)
        latency_ms = int((time.monotonic() - started) * 1000)
        message = f"{message} ({latency_ms} ms)"
        # Operators (read-only on connectors) may test too: the result is status, not configuration.
        self.sudo().write(
            {
                "health_state": "ok" if ok else "failing",
                "last_test_at": fields.Datetime.now(),
                "last_test_status_code": status_code,
                "last_test_latency_ms": latency_ms,
                "last_test_message": message[:500],
            }
        )
        return {"ok": ok, "status_code": status_code, "latency_ms": latency_ms, "message": message}

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
    ):
        """Call the API; the one path every outbound call of this addon takes.

        :param path: path under the base URL, or an absolute URL on the same host
        :param timeout: ``(connect, read)`` seconds overriding the connector's defaults
        :return: the ``requests.Response``
        :raises IntegrationError: typed, with secrets redacted from its message
        """
        self.ensure_one()
        url = self._build_url(path)
        request_headers = self._parse_default_headers()
        request_headers.update(headers or {})
        kwargs = {
            "params": dict(params or {}),
            "json": json,
            "data": data,
            "files": files,
            "headers": request_headers,
            "timeout": timeout or (self.timeout_connect, self.timeout_read),
            "verify": self.verify_tls,
            "allow_redirects": False,
        }
        if not self.verify_tls:
            _logger.warning("Connector %s: calling %s without TLS certificate verification", self.code, redact_url(url))
        response = self._send_authenticated(method, url, kwargs)
        if response.status_code == 401 and self.auth_type == "oauth2":
            # The token may have been revoked or expired early: one fresh token, one retry.
            _logger.info("Connector %s: 401 with a cached OAuth2 token, fetching a new one", self.code)
            self._oauth2_invalidate_token()
            response = self._send_authenticated(method, url, kwargs)
        if raise_for_status and response.status_code >= 400:
            raise self._http_error(method, url, response)
        return response

    def _send_authenticated(self, method, url, kwargs):
        self._sensitive_param_names()
        call_kwargs = dict(kwargs, headers=dict(kwargs["headers"]), params=dict(kwargs["params"]))
        self._auth_apply(call_kwargs)
        session = _get_session(self.env.cr.dbname, self.id)
        started = time.monotonic()
        try:
            response = session.request(method, url, **call_kwargs)
        except requests.exceptions.RequestException as exc:
            raise self._connection_error(method, url, exc) from None
        _logger.debug(
            "Connector %s: %s %s -> %s in %.0f ms",
            self.code,
            method,
            redact_url(url, self._sensitive_param_names()),
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _build_url(self, path):
        base = (self.base_url or "").rstrip("/") + "/"
        if not path:
            return base
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path):
            target, root = urlsplit(path), urlsplit(base)
            if (target.scheme, target.netloc) != (root.scheme, root.netloc):
                raise IntegrationConfigError(
                    self.env._(
                        "Connector %(code)s only calls %(root)s, not %(url)s.",
                        code=self.code,
                        root=f"{root.scheme}://{root.netloc}",
                        url=redact_url(path),
                    )
                )
            return path
        return urljoin(base, path.lstrip("/"))

    def _parse_default_headers(self):
        if not self.default_headers or not self.default_headers.strip():
            return {}
        try:
            headers = json.loads(self.default_headers)
        except ValueError as exc:
            raise ValidationError(self.env._("Default Headers must be a JSON object: %(error)s", error=exc)) from None
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValidationError(
                self.env._('Default Headers must be a JSON object of text values, e.g. {"Accept": "application/json"}.')
            )
        return headers

    # Authentication, dispatched on auth_type: _auth_apply_<type>(kwargs) edits the request.

    def _auth_apply(self, kwargs):
        method = getattr(self, f"_auth_apply_{self.auth_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("Authentication type %s is not supported.", self.auth_type))
        method(kwargs)

    def _auth_apply_none(self, kwargs):
        return

    def _auth_apply_api_key(self, kwargs):
        key = self._require_secret("api_key")
        name = self.api_key_name.strip()
        if self.api_key_location == "query":
            kwargs["params"][name] = key
        else:
            kwargs["headers"][name] = key

    def _auth_apply_bearer(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._require_secret('bearer_token')}"

    def _auth_apply_basic(self, kwargs):
        username = self.sudo().basic_username
        if not username:
            raise IntegrationConfigError(self.env._("Connector %s: the username for HTTP basic is not set.", self.code))
        # UTF-8, as RFC 7617 recommends (requests would encode text as Latin-1).
        password = self._require_secret("basic_password")
        kwargs["auth"] = requests.auth.HTTPBasicAuth(username.encode(), password.encode())

    def _auth_apply_oauth2(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._oauth2_access_token()}"

    def _require_secret(self, name):
        value = self._get_secret(name)
        if not value:
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: the %(secret)s is not set.", code=self.code, secret=self._fields[name].string
                )
            )
        return value

    # OAuth2: the token lives in integration.oauth.token (shared by every worker).

    def _oauth2_access_token(self):
        token = self.env["integration.oauth.token"].sudo()._for_connector(self)
        if token._is_usable():
            return token._get_secret("access_token")
        payload = self._oauth2_fetch_token(token)
        token = self.env["integration.oauth.token"].sudo()._store(self, payload)
        return token._get_secret("access_token")

    def _oauth2_invalidate_token(self):
        self.env["integration.oauth.token"].sudo()._for_connector(self)._clear()

    def _oauth2_fetch_token(self, current_token):
        """Ask the authorization server for a token; dispatched on the grant type.

        :param current_token: the stored ``integration.oauth.token`` (maybe empty), for
            grants that refresh with a refresh token
        :return: the token endpoint's JSON answer (``access_token``, ``expires_in``...)
        """
        method = getattr(self, f"_oauth2_token_request_{self.oauth2_grant_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("OAuth2 grant %s is not supported.", self.oauth2_grant_type))
        data, auth = method(current_token)
        return self._oauth2_post_token_request(data, auth)

    def _oauth2_token_request_client_credentials(self, current_token):
        data = {"grant_type": "client_credentials"}
        if self.oauth2_scope:
            data["scope"] = self.oauth2_scope
        if self.oauth2_audience:
            data["audience"] = self.oauth2_audience
        return self._oauth2_client_authentication(data)

    def _oauth2_client_authentication(self, data):
        client_id = self.sudo().oauth2_client_id
        if not client_id:
            raise IntegrationConfigError(self.env._("Connector %s: the OAuth2 client ID is not set.", self.code))
        secret = self._require_secret("oauth2_client_secret")
        if self.oauth2_client_auth == "body":
            return dict(data, client_id=client_id, client_secret=secret), None
        return data, requests.auth.HTTPBasicAuth(client_id.encode(), secret.encode())

    def _oauth2_post_token_request(self, data, auth):
        url = self.oauth2_token_url
        session = _get_session(self.env.cr.dbname, self.id)
        try:
            response = session.post(
                url,
                data=data,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=(self.timeout_connect, self.timeout_read),
                verify=self.verify_tls,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise self._connection_error("POST", url, exc) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200 or not isinstance(payload, dict) or not payload.get("access_token"):
            remote = ""
            if isinstance(payload, dict) and payload.get("error"):
                remote = ": ".join(str(payload[k]) for k in ("error", "error_description") if payload.get(k))
            error = IntegrationAuthError(
                self.env._(
                    "Connector %(code)s: the OAuth2 token request to %(url)s failed with HTTP %(status)s%(remote)s",
                    code=self.code,
                    url=redact_url(url),
                    status=response.status_code,
                    remote=f" ({self._redact(remote)})" if remote else "",
                )
            )
            _logger.warning("%s", error)
            raise error
        return payload

    # Errors

    def _sensitive_param_names(self):
        if self.auth_type == "api_key" and self.api_key_location == "query" and self.api_key_name:
            name = self.api_key_name.strip()
            # Also masked in the debug lines urllib3 writes for this process.
            register_sensitive_name(name)
            return [name]
        return []

    def _known_secret_values(self):
        """Every decrypted secret of this connector, to scrub from messages."""
        values = []
        for name in self._secret_field_names():
            if self.sudo()[f"{name}_encrypted"]:
                values.append(self._get_secret(name))
        if self.sudo().basic_password_encrypted and self.sudo().basic_username:
            # The form it travels in, should a remote echo the Authorization header back.
            credentials = f"{self.sudo().basic_username}:{self._get_secret('basic_password')}"
            values.append(base64.b64encode(credentials.encode()).decode())
        token = self.env["integration.oauth.token"].sudo().search([("connector_id", "=", self.id)], limit=1)
        if token.access_token_encrypted:
            values.append(token._get_secret("access_token"))
        return values

    def _redact(self, text, limit=None):
        return redact_text(text, self._known_secret_values(), limit=limit)

    def _remote_message(self, response):
        return self._redact(response.text or "", limit=REMOTE_MESSAGE_LIMIT)

    def _http_error(self, method, url, response):
        safe_url = redact_url(url, self._sensitive_param_names())
        remote = self._remote_message(response)
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
        )

    def _connection_error(self, method, url, exc):
        safe_url = redact_url(url, self._sensitive_param_names())
        if isinstance(exc, requests.exceptions.SSLError):
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
