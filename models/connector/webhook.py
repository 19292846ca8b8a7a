import hashlib
import logging
import re
from datetime import timedelta

from odoo import api, fields, models, tools
from odoo.exceptions import ValidationError

from ...const import MANAGER_GROUP, WEBHOOK_ROUTE_PREFIX
from ...core.exceptions import SecretDecryptionError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import loads_or_none
from ...core.signatures import (
    DEFAULT_TOLERANCE,
    PROFILE_ID_HEADER,
    PROFILE_ID_JSON_PATH,
    PROFILE_TYPE_HEADER,
    PROFILE_TYPE_JSON_PATH,
    GenericHmacOptions,
    get_header,
    verify,
)
from ...core.textsafe import EVENT_TYPE_LIMIT, bounded_text, unique_key
from ...core.webhook_receiver import RECEIVER_FIELDS, WebhookReceiver
from ..integration_secret_mixin import secret_fields

_logger = logging.getLogger(__name__)

HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# What a connector code can be (see CODE_PATTERN): anything else in a URL is no connector.
_RECEIVER_CODE = re.compile(r"[a-z0-9_-]{1,64}")


# Decrypted signing secrets by ciphertext, in this process: a changed or re-encrypted secret is
# a new ciphertext, so an entry never goes stale. Secrets are in memory during calls anyway.
_decrypted_secrets = {}


class IntegrationConnector(models.Model):
    """The receiving side of a connector: its webhook route, signature profile and handlers.

    Handlers are added the way payment providers add theirs: an addon that adds a
    ``kind`` overrides ``_webhook_process_event`` and calls ``super()`` for the other
    kinds, or defines ``_webhook_handle_<kind>_<event type slug>(event)`` methods.
    """

    _inherit = "integration.connector"

    webhook_signature = fields.Selection(
        selection=[
            ("standard_webhooks", "Standard Webhooks"),
            ("stripe", "Stripe"),
            ("github", "GitHub (X-Hub-Signature-256)"),
            ("shopify", "Shopify (X-Shopify-Hmac-SHA256)"),
            ("hmac_sha256", "Generic HMAC-SHA256"),
            ("none", "None (unsigned: anyone can post)"),
        ],
        string="Signature Profile",
        required=True,
        default="standard_webhooks",
        tracking=True,
        groups=MANAGER_GROUP,
        help="How deliveries on this connector's webhook URL are authenticated. Without a "
        "signing secret every profile but 'None' refuses all deliveries.",
    )
    webhook_secret, webhook_secret_encrypted, webhook_secret_is_set = secret_fields(
        "Signing Secret", help="The secret the sender signs with (Standard Webhooks: whsec_...)."
    )
    webhook_secret_previous, webhook_secret_previous_encrypted, webhook_secret_previous_is_set = secret_fields(
        "Previous Signing Secret",
        help="While a secret is being rotated, deliveries signed with this one are accepted too. "
        "Clear it once the sender uses the new secret.",
    )
    webhook_tolerance = fields.Integer(
        string="Timestamp Tolerance (s)",
        default=DEFAULT_TOLERANCE,
        groups=MANAGER_GROUP,
        help="How far a signed timestamp may be from now, in the past or the future "
        "(Standard Webhooks, Stripe, generic HMAC with a timestamp header).",
    )
    webhook_hmac_header = fields.Char(string="Signature Header", default="X-Signature", groups=MANAGER_GROUP)
    webhook_hmac_encoding = fields.Selection(
        [("hex", "Hexadecimal"), ("base64", "Base64")],
        string="Signature Encoding",
        default="hex",
        groups=MANAGER_GROUP,
    )
    webhook_hmac_prefix = fields.Char(
        string="Signature Prefix", groups=MANAGER_GROUP, help="Text before the signature, e.g. 'sha256='."
    )
    webhook_hmac_timestamp_header = fields.Char(
        string="Timestamp Header",
        groups=MANAGER_GROUP,
        help="Optional: a header carrying the Unix time of the delivery. When set, the "
        "signature covers '<timestamp>.<body>' and the tolerance applies.",
    )
    webhook_id_header = fields.Char(
        string="Event ID Header",
        help="Header carrying the sender's event id (default: the profile's own, e.g. webhook-id).",
    )
    webhook_id_path = fields.Char(
        string="Event ID JSON Path",
        help="Dotted path to the event id in a JSON body, e.g. 'id' or 'data.event_id'. Without "
        "a header or a path, the SHA-256 of the body identifies the event.",
    )
    webhook_type_header = fields.Char(string="Event Type Header")
    webhook_type_path = fields.Char(string="Event Type JSON Path", help="Dotted path, e.g. 'type' or 'event.name'.")
    webhook_max_body_kib = fields.Integer(
        string="Max Body Size (KiB)", default=1024, help="Larger deliveries are refused with HTTP 413, unread."
    )
    webhook_paused = fields.Boolean(
        string="Webhooks Paused",
        tracking=True,
        help="Deliveries are answered 503 with Retry-After: the sender keeps them and tries later.",
    )
    webhook_sequential = fields.Boolean(
        string="Process In Order",
        help="Process this connector's events one at a time, in the order received: an event "
        "waits while an older one is queued, running or failed.",
    )
    webhook_batch_size = fields.Integer(
        string="Events per Job",
        default=100,
        help="Waiting events are processed in batches: one job takes up to this many of them, each "
        "with its own outcome, attempts and Retry. 1: one job per event, for handlers that must "
        "run alone.",
    )
    webhook_unhandled = fields.Selection(
        [("ignore", "Mark ignored"), ("fail", "Mark failed")],
        string="Unknown Event Types",
        default="ignore",
        required=True,
    )
    webhook_retention_days = fields.Integer(
        string="Keep Processed Events (days)",
        default=30,
        help="Done and ignored events older than this are deleted daily (0: keep). Failed events stay.",
    )
    webhook_url = fields.Char(string="Webhook URL", compute="_compute_webhook_url")
    webhook_event_ids = fields.One2many("integration.webhook.event", "connector_id", string="Webhook Events")
    webhook_rule_ids = fields.One2many("integration.webhook.rule", "connector_id", string="Event Rules")
    webhook_queued_count = fields.Integer(string="Waiting Events", compute="_compute_webhook_stats")
    webhook_failed_count = fields.Integer(string="Failed Events", compute="_compute_webhook_stats")
    webhook_oldest_waiting_at = fields.Datetime(string="Oldest Waiting Since", compute="_compute_webhook_stats")
    webhook_oldest_waiting_age = fields.Char(string="Oldest Waiting", compute="_compute_webhook_stats")

    _sql_constraints = [
        ("webhook_max_body_positive", "CHECK(webhook_max_body_kib > 0)", "The maximum body size must be positive."),
        ("webhook_tolerance_positive", "CHECK(webhook_tolerance > 0)", "The timestamp tolerance must be positive."),
        ("webhook_retention_positive", "CHECK(webhook_retention_days >= 0)", "The retention cannot be negative."),
        (
            "webhook_batch_size_range",
            "CHECK(webhook_batch_size BETWEEN 1 AND 1000)",
            "Events per job must be between 1 and 1000.",
        ),
    ]

    @api.depends("code")
    def _compute_webhook_url(self):
        base = self.env["ir.config_parameter"].sudo().get_param("web.base.url", "").rstrip("/")
        for connector in self:
            connector.webhook_url = f"{base}{WEBHOOK_ROUTE_PREFIX}/{connector.code}" if connector.code else False

    def _compute_webhook_stats(self):
        Event = self.env["integration.webhook.event"]
        waiting = {
            connector.id: (count, oldest)
            for connector, count, oldest in Event._read_group(
                [("connector_id", "in", self.ids), ("state", "in", ("received", "queued", "processing"))],
                ["connector_id"],
                ["__count", "received_at:min"],
            )
        }
        failed = {
            connector.id: count
            for connector, count in Event._read_group(
                [("connector_id", "in", self.ids), ("state", "=", "failed")], ["connector_id"], ["__count"]
            )
        }
        now = fields.Datetime.now()
        for connector in self:
            count, oldest = waiting.get(connector.id, (0, False))
            connector.webhook_queued_count = count
            connector.webhook_failed_count = failed.get(connector.id, 0)
            connector.webhook_oldest_waiting_at = oldest
            connector.webhook_oldest_waiting_age = _age(now - oldest) if oldest else False

    @api.constrains(
        "webhook_hmac_header",
        "webhook_hmac_timestamp_header",
        "webhook_id_header",
        "webhook_type_header",
        "webhook_signature",
    )
    def _check_webhook_headers(self):
        for connector in self.sudo():
            for name in (
                "webhook_hmac_header",
                "webhook_hmac_timestamp_header",
                "webhook_id_header",
                "webhook_type_header",
            ):
                value = connector[name]
                if value and not HEADER_NAME.match(value):
                    raise ValidationError(
                        self.env._(
                            "%(field)s: %(value)r is not a valid HTTP header name.",
                            field=connector._fields[name].string,
                            value=value,
                        )
                    )
            if connector.webhook_signature == "hmac_sha256" and not connector.webhook_hmac_header:
                raise ValidationError(self.env._("Signature Header is required for the generic HMAC-SHA256 profile."))

    # ------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------

    def action_open_webhook_events(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_webhook_event_action")
        action["domain"] = [("connector_id", "=", self.id)]
        action["context"] = {"default_connector_id": self.id}
        return action

    def action_open_failed_webhook_events(self):
        action = self.action_open_webhook_events()
        action["context"] = {"search_default_filter_failed": 1}
        return action

    def action_webhook_pause(self):
        self.check_access("write")
        self.write({"webhook_paused": True})
        return True

    def action_webhook_resume(self):
        self.check_access("write")
        self.write({"webhook_paused": False})
        return True

    def action_webhook_retry_failed(self):
        """Button: choose a date, retry this connector's failed events since then."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Retry Failed Events"),
            "res_model": "integration.webhook.retry.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_connector_id": self.id},
        }

    # ------------------------------------------------------------------------------
    # Receiving (called by the webhook controller, as superuser)
    # ------------------------------------------------------------------------------

    @api.model_create_multi
    def create(self, vals_list):
        connectors = super().create(vals_list)
        self.env.registry.clear_cache()  # _webhook_receiver
        return connectors

    def write(self, vals):
        result = super().write(vals)
        if RECEIVER_FIELDS.intersection(vals):
            # Every worker drops its cached receivers (Odoo signals the cache invalidation).
            self.env.registry.clear_cache()
        return result

    def unlink(self):
        result = super().unlink()
        self.env.registry.clear_cache()
        return result

    @api.model
    def _webhook_receiver(self, code):
        """What the webhook route needs of the active connector receiving on ``code``.

        One narrow query, cached per worker until a connector's receiving settings change:
        the route is on the senders' clock. Returns a ``WebhookReceiver`` or None.
        """
        if not code or not _RECEIVER_CODE.fullmatch(code):
            return None  # a NUL or any odd character never reaches SQL
        return self._webhook_receiver_cached(code)

    @tools.ormcache("code")
    def _webhook_receiver_cached(self, code):
        columns = ", ".join(WebhookReceiver.COLUMNS)
        self.env.cr.execute(
            f"SELECT {columns} FROM integration_connector WHERE code = %s AND active",  # noqa: S608 - constants
            [code],
        )
        row = self.env.cr.fetchone()
        return WebhookReceiver(*row) if row else None

    @api.model
    def _webhook_secrets(self, receiver):
        """The receiver's signing secrets in clear, current first (decryptions cached per process)."""
        secrets = []
        for token in (receiver.webhook_secret_encrypted, receiver.webhook_secret_previous_encrypted):
            if not token:
                continue
            secret = _decrypted_secrets.get(token)
            if secret is None:
                try:
                    secret = self._secret_box().decrypt(token)
                except SecretDecryptionError:
                    # Said without the secret; the sender gets a 401 like any unverifiable delivery.
                    _logger.error("Connector %s: a webhook signing secret cannot be decrypted", receiver.code)
                    continue
                if len(_decrypted_secrets) > 256:
                    _decrypted_secrets.clear()
                _decrypted_secrets[token] = secret
            secrets.append(secret)
        return secrets

    @api.model
    def _webhook_verify(self, receiver, body, headers):
        """Raise ``SignatureError`` unless the delivery is authentic; returns ``Verified``."""
        profile = receiver.webhook_signature
        secrets = self._webhook_secrets(receiver) if profile != "none" else []
        options = None
        if profile == "hmac_sha256":
            options = GenericHmacOptions(
                header=receiver.webhook_hmac_header or "X-Signature",
                encoding=receiver.webhook_hmac_encoding or "hex",
                prefix=receiver.webhook_hmac_prefix or "",
                timestamp_header=receiver.webhook_hmac_timestamp_header or "",
            )
        return verify(
            profile, body, headers, secrets, tolerance=receiver.webhook_tolerance or DEFAULT_TOLERANCE, options=options
        )

    @api.model
    def _webhook_identify(self, receiver, body, headers):
        """(event id, event type) of a delivery, from headers or the JSON body.

        The connector's own settings win over the profile's defaults; without any id the
        SHA-256 of the body is the id, so a byte-identical delivery is a duplicate.
        """
        profile = receiver.webhook_signature
        document = loads_or_none(body) if _wants_json(receiver, profile) else None
        event_id = _first_text(
            _header_value(headers, receiver.webhook_id_header),
            json_path_get(document, receiver.webhook_id_path) if receiver.webhook_id_path else None,
            _header_value(headers, PROFILE_ID_HEADER.get(profile)),
            json_path_get(document, PROFILE_ID_JSON_PATH[profile]) if profile in PROFILE_ID_JSON_PATH else None,
        )
        if not event_id:
            event_id = "sha256:" + hashlib.sha256(body).hexdigest()
        event_type = _first_text(
            _header_value(headers, receiver.webhook_type_header),
            json_path_get(document, receiver.webhook_type_path) if receiver.webhook_type_path else None,
            _header_value(headers, PROFILE_TYPE_HEADER.get(profile)),
            json_path_get(document, PROFILE_TYPE_JSON_PATH[profile]) if profile in PROFILE_TYPE_JSON_PATH else None,
        )
        # Storable and bounded; a cleaned or shortened id keeps a digest of the id as sent.
        return unique_key(event_id), bounded_text(event_type, EVENT_TYPE_LIMIT)


def _age(delta):
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if delta < timedelta(days=2):
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{delta.days} days"


def _wants_json(connector, profile):
    return bool(
        connector.webhook_id_path
        or connector.webhook_type_path
        or profile in PROFILE_ID_JSON_PATH
        or profile in PROFILE_TYPE_JSON_PATH
    )


def _header_value(headers, name):
    return get_header(headers, name) if name else None


def _first_text(*values):
    for value in values:
        if value is not None and not isinstance(value, dict | list) and str(value).strip():
            return str(value).strip()
    return None
