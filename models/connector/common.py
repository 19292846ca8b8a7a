import json as json_module
import logging
import re
from urllib.parse import parse_qsl, urlsplit

from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...const import WEBHOOK_ROUTE_PREFIX
from ...core.redact import is_sensitive_name, redact_url

_logger = logging.getLogger(__name__)

CODE_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


class IntegrationConnector(models.Model):
    """One external API: where it is, how to authenticate, how to call it.

    Concrete connectors (a shop, a partner ERP) extend this model the way payment
    providers extend ``payment.provider``: add a value to ``kind`` and override the
    methods that dispatch on it, calling ``super()`` for the other kinds.

    The model is written in chapters, one file each under ``models/connector/``:

    - ``common``: identity, request defaults, network flags, copy;
    - ``auth``: authentication types (``_auth_apply_<type>``), secrets, redaction;
    - ``oauth2``: the shared token cache and the grants (``_oauth2_token_request_<grant>``);
    - ``oauth2_connect``: the authorization code grant's Connect, callback and Disconnect;
    - ``jwt``: signed JWT assertions (the ``jwt`` type and the ``jwt_bearer`` grant);
    - ``call``: ``_request``, the one outbound call path, URL checks and error typing;
    - ``reliability``: rate limit, retry policy, circuit breaker, job routing;
    - ``monitoring``: health, Test Connection, metrics, call recording, error log;
    - ``webhook``: the receiving side (signature profile, route settings, handlers).
    """

    _name = "integration.connector"
    _description = "Integration Connector"
    _inherit = ["mail.thread", "mail.activity.mixin", "integration.secret.mixin"]
    _order = "sequence, name, id"

    name = fields.Char(required=True, tracking=True, translate=False)
    code = fields.Char(
        required=True,
        tracking=True,
        help=f"Short identifier used in URLs (webhooks: {WEBHOOK_ROUTE_PREFIX}/<code>): "
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

    # Request defaults
    # Request defaults
    timeout_connect = fields.Float(string="Connect Timeout (s)", default=5.0)
    timeout_read = fields.Float(string="Read Timeout (s)", default=30.0)
    timeout_total = fields.Float(
        string="Total Timeout (s)",
        help="The longest a whole exchange may take, the answer read to its end. 0: the connect and "
        "read timeouts added up. The read timeout bounds each wait for a byte only: a server "
        "that trickles its answer would otherwise hold the call (and its worker) for hours.",
    )
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

    # Network safety
    # Network safety
    allow_http = fields.Boolean(
        string="Allow Plain HTTP",
        tracking=True,
        help="Off: only https URLs are called. Turn on for a partner server without TLS on a trusted network.",
    )
    allow_private_network = fields.Boolean(
        tracking=True,
        help="Off: loopback, private, link-local (cloud metadata), CGNAT and unique-local addresses are "
        "refused, whatever the host name resolves to. Turn on for a partner ERP on your LAN.",
    )

    _sql_constraints = [
        ("code_uniq", "unique(code)", "Another connector already uses this code."),
        ("timeout_connect_positive", "CHECK(timeout_connect > 0)", "The connect timeout must be positive."),
        ("timeout_read_positive", "CHECK(timeout_read > 0)", "The read timeout must be positive."),
        ("timeout_total_positive", "CHECK(timeout_total >= 0)", "The total timeout cannot be negative."),
    ]

    @api.constrains("code")
    def _check_code(self):
        """The code is part of URLs (the webhook route): a lowercase slug of at most 64 characters."""
        for connector in self:
            if not CODE_PATTERN.match(connector.code or "") or len(connector.code) > 64:
                raise ValidationError(
                    self.env._(
                        "Code %(code)r is not valid: use 1 to 64 lowercase letters and digits, "
                        "separated by single '-' or '_' (for example 'shop-eu').",
                        code=connector.code,
                    )
                )

    @api.constrains("base_url")
    def _check_urls(self):
        """The base URL is an absolute http(s) URL without credentials in it."""
        for connector in self:
            connector._validate_http_url(connector.base_url, connector._fields["base_url"].string)

    @api.model
    def _validate_http_url(self, url, label):
        """Raise a ValidationError naming ``label`` unless ``url`` is absolute http(s) without credentials."""
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                self.env._(
                    "%(field)s must be an absolute http:// or https:// URL, got %(url)r.",
                    field=label,
                    url=redact_url(url),
                )
            )
        if parts.username or parts.password or any(is_sensitive_name(k) for k, _v in parse_qsl(parts.query)):
            raise ValidationError(
                self.env._(
                    "%(field)s must not contain credentials (user info or a key in the query string): "
                    "use the Authentication settings, whose secrets are encrypted.",
                    field=label,
                )
            )

    @api.constrains("default_headers")
    def _check_default_headers(self):
        """Default headers are a JSON object of text values, with no credential among them."""
        for connector in self:
            connector._parse_default_headers()

    def _parse_default_headers(self):
        """The default headers as a dict (a clear ValidationError when they are not usable)."""
        if not self.default_headers or not self.default_headers.strip():
            return {}
        try:
            headers = json_module.loads(self.default_headers)
        except ValueError as exc:
            raise ValidationError(self.env._("Default Headers must be a JSON object: %(error)s", error=exc)) from None
        if isinstance(headers, dict):
            sensitive = sorted(name for name in headers if is_sensitive_name(name))
            if sensitive:
                raise ValidationError(
                    self.env._(
                        "Default Headers must not carry credentials (%(names)s): they are stored in clear and "
                        "shown to operators. Use the Authentication tab, whose secrets are encrypted.",
                        names=", ".join(sensitive),
                    )
                )
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValidationError(
                self.env._('Default Headers must be a JSON object of text values, e.g. {"Accept": "application/json"}.')
            )
        return headers

    @api.constrains("verify_tls")
    def _check_verify_tls(self):
        """Turning TLS verification off is allowed, and logged with who did it."""
        for connector in self.filtered(lambda c: not c.verify_tls):
            _logger.warning(
                "TLS certificate verification disabled on connector %s (%s) by %s",
                connector.code,
                connector.id,
                self.env.user.login,
            )

    def copy_data(self, default=None):
        """A copy gets a free code and a '(copy)' name; secrets are never copied (``copy=False``)."""
        vals_list = super().copy_data(default=default)
        default = default or {}
        for connector, vals in zip(self, vals_list, strict=True):
            if "code" not in default:
                vals["code"] = connector._free_copy_code()
            if "name" not in default:
                vals["name"] = self.env._("%s (copy)", connector.name)
        return vals_list

    def _free_copy_code(self):
        """The first of ``<code>-copy``, ``<code>-copy-2``... that no connector (archived ones included) uses."""
        Connector = self.with_context(active_test=False)
        code, number = f"{self.code}-copy", 1
        while Connector.search_count([("code", "=", code)]):
            number += 1
            code = f"{self.code}-copy-{number}"
        return code
