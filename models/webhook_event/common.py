import logging
import operator as py_operator
from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError

from ...core.actions import notification
from ...core.jsonutil import loads, payload_bytes, pretty, pretty_payload

_logger = logging.getLogger(__name__)

OPERATORS = {
    "=": py_operator.eq,
    "!=": py_operator.ne,
    ">": py_operator.gt,
    ">=": py_operator.ge,
    "<": py_operator.lt,
    "<=": py_operator.le,
}


class IntegrationWebhookEvent(models.Model):
    """One delivery received on a connector's webhook route: the inbox operators trust.

    Stored once per (connector, event id) by ``_ingest`` (``inbox``), which the
    controller calls after the signature check; given a processing job by the dispatcher
    (``dispatch``); processed, one or a batch per job, by ``_job_process`` (``processing``), which dispatches to
    the connector's handlers. This file: fields, screens, operator actions, purge.
    """

    _name = "integration.webhook.event"
    _description = "Webhook Event"
    _inherit = ["mail.thread", "integration.related.mixin"]
    _order = "received_at desc, id desc"
    _rec_name = "event_id"

    # Not indexed on their own: the unique (connector_id, event_id) index serves connector
    # lookups, and every index is paid by each delivery while the sender waits.
    connector_id = fields.Many2one("integration.connector", required=True, readonly=True, ondelete="cascade")
    company_id = fields.Many2one(related="connector_id.company_id", store=True)
    event_id = fields.Char(
        string="Event ID", required=True, readonly=True, help="The sender's id, or sha256:<hash of the body>."
    )
    event_type = fields.Char(readonly=True)
    received_at = fields.Datetime(readonly=True, default=fields.Datetime.now, index=True)
    signed_at = fields.Datetime(readonly=True, help="The timestamp the sender signed, if any.")
    remote_addr = fields.Char(string="Sender Address", readonly=True)
    headers = fields.Text(readonly=True, help="Selected request headers, signatures masked.")
    payload = fields.Text(
        readonly=True, help="The body as received (base64 when it is not UTF-8 text or holds a NUL byte)."
    )
    payload_is_base64 = fields.Boolean(readonly=True)
    payload_size = fields.Integer(string="Size (bytes)", readonly=True)
    payload_hash = fields.Char(
        readonly=True,
        help="SHA-256 of the body, kept unique per connector where the sender's signature does not "
        "cover the event id (GitHub, Shopify, generic HMAC): a signed body replayed under a new "
        "id is a duplicate.",
    )
    state = fields.Selection(
        [
            ("received", "Received"),
            ("queued", "Queued"),
            ("processing", "Processing"),
            ("done", "Done"),
            ("failed", "Failed"),
            ("ignored", "Ignored"),
        ],
        default="received",
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    attempts = fields.Integer(readonly=True)
    last_error = fields.Text(readonly=True)
    processed_at = fields.Datetime(readonly=True, index=True)  # the dashboard's drain rate
    result_note = fields.Text(string="Result", readonly=True)
    duplicate_count = fields.Integer(
        string="Duplicates",
        compute="_compute_duplicates",
        search="_search_duplicate_count",
        help="Deliveries of this event received after the first.",
    )
    last_duplicate_at = fields.Datetime(string="Last Repeated Delivery", compute="_compute_duplicates")
    job_id = fields.Many2one("queue.job", readonly=True, ondelete="set null", index="btree_not_null")
    job_state = fields.Selection(related="job_id.state", string="Job State")
    payload_pretty = fields.Text(string="Payload ", compute="_compute_pretty")
    headers_pretty = fields.Text(string="Headers ", compute="_compute_pretty")
    can_retry = fields.Boolean(compute="_compute_can")
    can_reprocess = fields.Boolean(compute="_compute_can")

    _sql_constraints = [
        ("connector_event_uniq", "unique(connector_id, event_id)", "This event was already received."),
    ]

    def init(self):
        # Partial: most profiles sign the event id and store no hash, and an index entry
        # is paid by every delivery while the sender waits. (Replaces a full constraint.)
        self.env.cr.execute(
            """
            ALTER TABLE integration_webhook_event
                DROP CONSTRAINT IF EXISTS integration_webhook_event_connector_payload_uniq;
            CREATE UNIQUE INDEX IF NOT EXISTS integration_webhook_event_payload_hash_uniq
                ON integration_webhook_event (connector_id, payload_hash) WHERE payload_hash IS NOT NULL;
            """
        )

    @api.depends("event_id", "event_type", "connector_id.name")
    def _compute_display_name(self):
        for event in self:
            event.display_name = f"{event.connector_id.name}: {event.event_type or '?'} ({event.event_id})"

    @api.depends("payload", "payload_is_base64", "headers")
    def _compute_pretty(self):
        for event in self:
            event.payload_pretty = pretty_payload(event.payload, event.payload_is_base64)
            event.headers_pretty = pretty(event.headers)

    def _compute_duplicates(self):
        Counter = self.env["integration.webhook.duplicate"].sudo()
        ids = [event_id for event_id in self.ids if isinstance(event_id, int)]
        counters = Counter.search_fetch([("event_id", "in", ids)], ["event_id", "count", "last_at"])
        by_event = {counter.event_id.id: counter for counter in counters}
        for event in self:
            counter = by_event.get(event.id)
            event.duplicate_count = counter.count if counter else 0
            event.last_duplicate_at = counter.last_at if counter else False

    def _search_duplicate_count(self, operator, value):
        if operator not in OPERATORS or not isinstance(value, int):
            raise UserError(self.env._("Duplicates can only be compared with a whole number."))
        Counter = self.env["integration.webhook.duplicate"].sudo()
        matching = Counter._search([("count", operator, value)])
        if not OPERATORS[operator](0, value):
            return [("id", "in", matching.subselect("event_id"))]
        # Events never delivered twice have no counter and match too (e.g. "= 0").
        counted = Counter._search([]).subselect("event_id")
        return ["|", ("id", "not in", counted), ("id", "in", matching.subselect("event_id"))]

    @api.depends("state")
    def _compute_can(self):
        for event in self:
            event.can_retry = event.state == "failed"
            event.can_reprocess = event.state in ("done", "ignored")

    def action_retry(self):
        """Button and bulk action: process failed events again."""
        events = self.filtered(lambda e: e.state == "failed")
        if not events:
            raise UserError(self.env._("Only failed events can be retried."))
        events._requeue(self.env._("Retried by %s.", self.env.user.name))
        return _notification(self.env, self.env._("%s event(s) queued again.", len(events)))

    def action_reprocess(self):
        """Button: run the handler again on a processed (or ignored) event."""
        events = self.filtered(lambda e: e.state in ("done", "ignored"))
        if not events:
            raise UserError(self.env._("Only done or ignored events can be reprocessed."))
        events._requeue(self.env._("Reprocessing requested by %s.", self.env.user.name))
        return _notification(self.env, self.env._("%s event(s) queued for reprocessing.", len(events)))

    def action_ignore(self):
        """Button: stop trying; the event stays for reference."""
        events = self.filtered(lambda e: e.state in ("received", "queued", "failed"))
        if not events:
            raise UserError(self.env._("Only waiting or failed events can be marked ignored."))
        self.check_access("read")
        running = events.filtered(lambda e: e.sudo().job_id.state == "started")
        if running:
            raise UserError(
                self.env._(
                    "%s is being processed right now; wait for the result, then mark it ignored if needed.",
                    running[0].display_name,
                )
            )
        for event in events.sudo():
            # A batch's job also runs other events: it stays, and skips this one.
            if event.job_id.state in ("pending", "enqueued", "wait_dependencies") and not (
                event.job_id.records - events
            ):
                event.job_id.button_cancelled()
            event.write({"state": "ignored", "processed_at": fields.Datetime.now()})
            event._message_log(body=self.env._("Marked ignored by %s.", self.env.user.name))
        for connector in events.connector_id.filtered("webhook_sequential"):
            self.sudo()._queue_next_in_line(connector)  # the events held behind may go now
        return True

    def _integration_can_retry(self):
        """Retry from the error log (``integration.error``): a failed event is processed again."""
        self.ensure_one()
        return self.state == "failed"

    def _integration_retry(self):
        return self.action_retry()

    def _payload_json(self):
        """The payload parsed as JSON (``core/jsonutil.py``: depth bounded, text made storable,
        a body that is not UTF-8 read with U+FFFD); a clear error when it is not JSON."""
        self.ensure_one()
        try:
            return loads(payload_bytes(self.payload, self.payload_is_base64), clean=True)
        except ValueError as exc:
            raise UserError(
                self.env._(
                    "Event %(event)s: the payload is not valid JSON (%(error)s).", event=self.display_name, error=exc
                )
            ) from None

    def _requeue(self, note):
        """Queue these events again, each with a new job (a failed one is cancelled)."""
        self.check_access("read")  # operators act on what they can see; the write is ours
        # Before the jobs: one run inline (queue_job's no-delay switch) may record a new error.
        errors = (
            self.env["integration.error"]
            .sudo()
            .search([("res_model", "=", self._name), ("res_id", "in", self.ids), ("state", "=", "new")])
        )
        errors.write({"state": "resolved"})
        for event in self.sudo():
            if event.job_id.state == "failed" and not (event.job_id.records - self):
                event.job_id.button_cancelled()  # superseded: one failed job per event, not two
            event.write({"state": "queued", "last_error": False})
            event._message_log(body=note)
        self.sudo()._enqueue()

    @api.model
    def _cron_purge(self):
        """Delete done and ignored events past their connector's retention (failed ones stay)."""
        connectors = (
            self.env["integration.connector"]
            .with_context(active_test=False)
            .search([("webhook_retention_days", ">", 0)])
        )
        total = 0
        for connector in connectors:
            cutoff = fields.Datetime.now() - timedelta(days=connector.webhook_retention_days)
            events = self.search(
                [
                    ("connector_id", "=", connector.id),
                    ("state", "in", ("done", "ignored")),
                    ("received_at", "<", cutoff),
                ]
            )
            total += len(events)
            events.unlink()
        _logger.info("Purged %d processed webhook event(s)", total)
        return total


def _notification(env, message):
    return notification(env._("Webhook events"), message)
