import base64
import hashlib
import json
import logging
import math
import traceback
from datetime import timedelta

import psycopg2.errors

from odoo import SUPERUSER_ID, api, fields, models
from odoo.exceptions import UserError

from odoo.addons.queue_job.exception import RetryableJobError
from odoo.addons.queue_job.job import Job

from ..core.backoff import retry_delay
from ..core.redact import redact_headers, redact_text
from .integration_connector import _jitter_random
from .integration_connector_state import state_cursor
from .integration_connector_webhook import WebhookEventUnhandled

_logger = logging.getLogger(__name__)

WEBHOOK_CHANNEL = "root.integration.webhook"
# Profiles whose signature does not cover the event id: the body must be unique as well.
UNSIGNED_ID_PROFILES = frozenset({"github", "shopify", "hmac_sha256"})
DISPATCH_IDENTITY_KEY = "integration.webhook.event:dispatch"
# Before the event jobs it creates, which have queue_job's default priority (10).
DISPATCH_PRIORITY = 5
DISPATCH_BATCH = 500
# Advisory lock namespace for in-order processing (the second key is the connector id).
SEQUENTIAL_LOCK_NAMESPACE = 0x1A7F
# Seconds an in-order event waits before looking again at the event ahead of it.
SEQUENTIAL_WAIT = 5
WAITING_STATES = ("received", "queued", "processing")
ERROR_LIMIT = 4000
# Headers never worth keeping with an event (hop-by-hop, or identical on every delivery).
_SKIPPED_HEADERS = frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "host", "accept-encoding"}
)


class IntegrationWebhookEvent(models.Model):
    """One delivery received on a connector's webhook route: the inbox operators trust.

    Stored once per (connector, event id) by ``_ingest``, which the controller calls
    after the signature check; processed by a queue job (``_job_process``) that
    dispatches to the connector's handlers.
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
    payload = fields.Text(readonly=True, help="The body as received (base64 when it is not UTF-8 text).")
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
    processed_at = fields.Datetime(readonly=True)
    result_note = fields.Text(string="Result", readonly=True)
    duplicate_count = fields.Integer(
        string="Duplicates", readonly=True, help="Deliveries of this event received after the first."
    )
    last_duplicate_at = fields.Datetime(readonly=True)
    job_id = fields.Many2one("queue.job", readonly=True, ondelete="set null", index="btree_not_null")
    job_state = fields.Selection(related="job_id.state", string="Job State")
    payload_pretty = fields.Text(string="Payload ", compute="_compute_pretty")
    headers_pretty = fields.Text(string="Headers ", compute="_compute_pretty")
    can_retry = fields.Boolean(compute="_compute_can")
    can_reprocess = fields.Boolean(compute="_compute_can")

    _sql_constraints = [
        ("connector_event_uniq", "unique(connector_id, event_id)", "This event was already received."),
        ("connector_payload_uniq", "unique(connector_id, payload_hash)", "This body was already received."),
    ]

    @api.depends("event_id", "event_type", "connector_id.name")
    def _compute_display_name(self):
        for event in self:
            event.display_name = f"{event.connector_id.name}: {event.event_type or '?'} ({event.event_id})"

    @api.depends("payload", "payload_is_base64", "headers")
    def _compute_pretty(self):
        for event in self:
            event.payload_pretty = _pretty(event.payload) if not event.payload_is_base64 else event.payload
            event.headers_pretty = _pretty(event.headers)

    @api.depends("state")
    def _compute_can(self):
        for event in self:
            event.can_retry = event.state == "failed"
            event.can_reprocess = event.state in ("done", "ignored")

    # ------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------

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
        for event in events.sudo():
            if event.job_id.state in ("pending", "enqueued", "wait_dependencies"):
                event.job_id.button_cancelled()
            event.write({"state": "ignored", "processed_at": fields.Datetime.now()})
            event._message_log(body=self.env._("Marked ignored by %s.", self.env.user.name))
        return True

    def _payload_json(self):
        """The payload parsed as JSON; a clear error when it is not JSON."""
        self.ensure_one()
        if self.payload_is_base64:
            raise UserError(self.env._("Event %s: the payload is binary, not JSON.", self.display_name))
        try:
            return json.loads(self.payload or "")
        except ValueError as exc:
            raise UserError(
                self.env._(
                    "Event %(event)s: the payload is not valid JSON (%(error)s).", event=self.display_name, error=exc
                )
            ) from None

    def _requeue(self, note):
        """Queue these events again, each with a new job (a failed one is cancelled)."""
        self.check_access("read")  # operators act on what they can see; the write is ours
        for event in self.sudo():
            if event.job_id.state == "failed":
                event.job_id.button_cancelled()  # superseded: one failed job per event, not two
            event.write({"state": "queued", "last_error": False})
            event._message_log(body=note)
            event._enqueue()
        errors = (
            self.env["integration.error"]
            .sudo()
            .search([("res_model", "=", self._name), ("res_id", "in", self.ids), ("state", "=", "new")])
        )
        errors.write({"state": "resolved"})

    # ------------------------------------------------------------------------------
    # Receiving
    # ------------------------------------------------------------------------------

    @api.model
    def _ingest(self, connector, body, headers, event_id, event_type, signed_at=None, remote_addr=None):
        """Store a verified delivery once, in the caller's transaction, and make sure a
        dispatcher job will queue its processing job.

        The per-event job is created by the dispatcher (``_job_dispatch_received``), in
        batches, so that the request costs one insert: senders are waiting.

        :param connector: the connector's ``WebhookReceiver`` (``_webhook_receiver``)
        :return: ``(event id, True)`` when stored now, ``(event id, False)`` for a duplicate
            of an event already stored (nothing new stored or queued)
        """
        cr = self.env.cr
        payload, is_base64 = _payload_text(body)
        values = {
            "connector_id": connector.id,
            "company_id": connector.company_id,
            "event_id": event_id,
            "event_type": event_type or None,
            "signed_at": fields.Datetime.to_string(signed_at) if signed_at else None,
            "remote_addr": (remote_addr or "")[:64] or None,
            "headers": json.dumps(_kept_headers(connector, headers), sort_keys=True),
            "payload": payload,
            "payload_is_base64": is_base64,
            "payload_size": len(body),
            "payload_hash": hashlib.sha256(body).hexdigest()
            if connector.webhook_signature in UNSIGNED_ID_PROFILES
            else None,
            "uid": SUPERUSER_ID,
            "dispatch_key": DISPATCH_IDENTITY_KEY,
        }
        try:
            # The unique index decides: a concurrent delivery of the same event waits for
            # ours to commit, then finds it.
            with cr.savepoint(flush=False):
                # One round trip: the insert, and whether a dispatcher is already waiting.
                cr.execute(
                    """
                    WITH inserted AS (
                    INSERT INTO integration_webhook_event (
                        connector_id, company_id, event_id, event_type, signed_at, remote_addr, headers,
                        payload, payload_is_base64, payload_size, payload_hash, state, attempts, duplicate_count,
                        received_at, create_uid, write_uid, create_date, write_date)
                    VALUES (%(connector_id)s, %(company_id)s, %(event_id)s, %(event_type)s, %(signed_at)s,
                            %(remote_addr)s, %(headers)s, %(payload)s, %(payload_is_base64)s, %(payload_size)s,
                            %(payload_hash)s,
                            'received', 0, 0, now() AT TIME ZONE 'UTC', %(uid)s, %(uid)s,
                            now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
                    ON CONFLICT DO NOTHING
                    RETURNING id)
                    SELECT (SELECT id FROM inserted),
                           EXISTS (SELECT 1 FROM queue_job WHERE identity_key = %(dispatch_key)s
                                      AND state IN ('wait_dependencies', 'pending', 'enqueued'))
                    """,
                    values,
                    log_exceptions=False,  # a concurrent duplicate is expected, not an error
                )
                record_id, dispatcher_waiting = cr.fetchone()
        except psycopg2.errors.SerializationFailure:
            # The same event was stored by a transaction that committed after ours began.
            return (
                self._count_duplicate(connector.id, event_id, values["payload_hash"], committed_elsewhere=True),
                False,
            )
        if record_id is None:
            return self._count_duplicate(connector.id, event_id, values["payload_hash"]), False
        if not dispatcher_waiting:
            self._schedule_dispatch()
        return record_id, True

    @api.model
    def _schedule_dispatch(self):
        """Queue the dispatcher unless one is already waiting to run."""
        self.env["queue.job"].flush_model(["identity_key", "state"])
        self.env.cr.execute(
            "SELECT 1 FROM queue_job WHERE identity_key = %s AND state IN ('wait_dependencies', 'pending', 'enqueued')"
            " LIMIT 1",
            [DISPATCH_IDENTITY_KEY],
        )
        if self.env.cr.fetchone():
            return
        self.with_user(SUPERUSER_ID).with_context(tracking_disable=True).with_delay(
            channel=WEBHOOK_CHANNEL,
            description=self.env._("Queue received webhook events"),
            identity_key=DISPATCH_IDENTITY_KEY,
            priority=DISPATCH_PRIORITY,
        )._job_dispatch_received()

    @api.model
    def _job_dispatch_received(self):
        """Queue job: give every received event its processing job (and state queued).

        Several dispatchers may run at once: each locks the rows it takes (SKIP LOCKED).
        Events stored after this transaction began are invisible to it; a last look
        through a read-committed connection catches them and queues another dispatcher.
        """
        queued = 0
        taken = set()
        self.flush_model(["state"])
        while True:
            self.env.cr.execute(
                """SELECT id FROM integration_webhook_event WHERE state = 'received'
                    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
                [DISPATCH_BATCH],
            )
            ids = [row[0] for row in self.env.cr.fetchall()]
            if not ids:
                break
            taken.update(ids)
            events = self.browse(ids)
            events.fetch(["connector_id", "event_type", "company_id"])  # not the payloads
            for event in events:
                event._enqueue()
            queued += len(ids)
        with state_cursor(self.env.cr.dbname) as cr:
            # Our own updates are not committed yet: only events this job did not take count.
            cr.execute(
                "SELECT 1 FROM integration_webhook_event WHERE state = 'received' AND NOT (id = ANY(%s)) LIMIT 1",
                [list(taken)],
            )
            late = cr.fetchone()
        if late:
            self._schedule_dispatch()
        return self.env._("%s event(s) queued.", queued)

    @api.model
    def _cron_dispatch_received(self):
        """Safety net: queue a dispatcher if events wait without one (e.g. a failed dispatcher)."""
        self.flush_model(["state", "received_at"])
        self.env.cr.execute(
            "SELECT 1 FROM integration_webhook_event WHERE state = 'received'"
            " AND received_at < (now() AT TIME ZONE 'UTC') - interval '1 minute' LIMIT 1"
        )
        if self.env.cr.fetchone():
            self._schedule_dispatch()

    @api.model
    def _count_duplicate(self, connector_id, event_id, payload_hash=None, committed_elsewhere=False):
        """Count one more delivery of a stored event; returns the event's id."""
        query = """
            UPDATE integration_webhook_event
               SET duplicate_count = duplicate_count + 1, last_duplicate_at = now() AT TIME ZONE 'UTC'
             WHERE connector_id = %s AND (event_id = %s OR payload_hash = %s)
         RETURNING id
        """
        if not committed_elsewhere:
            try:
                with self.env.cr.savepoint(flush=False):
                    self.env.cr.execute(query, [connector_id, event_id, payload_hash], log_exceptions=False)
                    row = self.env.cr.fetchone()
                    return row and row[0]
            except psycopg2.errors.SerializationFailure:
                # Another duplicate was counted meanwhile: count on a connection that sees it.
                _logger.debug("Duplicate of %s counted through the shared-state connection", event_id)
        # Autocommit, read-committed: sees the committed event and never fails to serialize.
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(query, [connector_id, event_id, payload_hash])
            row = cr.fetchone()
        return row and row[0]

    def _enqueue(self):
        """Create the processing job of this event (run as superuser, in the event's company)."""
        self.ensure_one()
        connector = self.connector_id
        event_type = self.event_type
        job = (
            self.with_user(SUPERUSER_ID)
            .with_company(connector.company_id)
            .with_context(tracking_disable=True)  # the job record's creation, not its run
            .with_delay(
                channel=WEBHOOK_CHANNEL,
                description=self.env._(
                    "%(connector)s: webhook %(type)s", connector=connector.name, type=event_type or "?"
                ),
                identity_key=f"integration.webhook.event:{self.id}",
                max_retries=connector.retry_max_attempts + 1,
            )
            ._job_process()
        )
        if not isinstance(job, Job):
            # queue_job's no-delay switch (tests, debugging) ran the processing inline.
            return
        self.env.cr.execute(
            """UPDATE integration_webhook_event
                  SET job_id = (SELECT id FROM queue_job WHERE uuid = %s),
                      state = CASE WHEN state = 'received' THEN 'queued' ELSE state END
                WHERE id = %s""",
            [job.uuid, self.id],
        )
        self.invalidate_recordset(["job_id", "state"])

    # ------------------------------------------------------------------------------
    # Processing
    # ------------------------------------------------------------------------------

    def _job_process(self):
        """Queue job entry point: run the connector's handler for this event.

        The handler runs in a savepoint; a failure is written through a fresh cursor
        (this transaction is about to roll back) and then raised, so that queue_job
        retries the job (transient) or marks it failed (permanent, or attempts spent).
        """
        self.ensure_one()
        event = self.with_company(self.company_id)
        if event.state not in ("received", "queued", "processing", "failed"):
            return self.env._("Nothing to do: the event is %s.", event.state)
        # Failures of calls the handler makes are linked to this event in the error log.
        event = event.with_context(integration_related_model=self._name, integration_related_id=self.id)
        connector = event.connector_id
        if connector.webhook_sequential:
            event._wait_for_turn()
        job_uuid = self.env.context.get("job_uuid")
        job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1) if job_uuid else None
        job_attempt = (job.retry if job else 0) + 1  # this job's runs decide when to give up
        attempt = event.attempts + 1  # the event's runs, across Retry and Reprocess
        try:
            with self.env.cr.savepoint():
                outcome = connector._webhook_process_event(event)
        except WebhookEventUnhandled as exc:
            if connector.webhook_unhandled == "fail":
                event._fail(exc, attempt, permanent=True)
                raise
            event._finish("ignored", str(exc), attempt)
            return str(exc)
        except RetryableJobError as exc:
            max_attempts = min(connector.retry_max_attempts, job.max_retries if job and job.max_retries else 10**6)
            if job_attempt >= max_attempts:
                event._fail(exc, attempt, permanent=True, gave_up=max_attempts)
                raise _GaveUp(
                    self.env._("%(error)s (gave up after %(max)s attempts)", error=exc, max=max_attempts)
                ) from None
            seconds = exc.seconds or retry_delay(
                job_attempt - 1, connector.retry_backoff_base, connector.retry_backoff_cap, rng=_jitter_random
            )
            event._fail(exc, attempt, permanent=False)
            raise RetryableJobError(
                str(exc), seconds=max(1, math.ceil(seconds)), ignore_retry=exc.ignore_retry
            ) from None
        except Exception as exc:
            event._fail(exc, attempt, permanent=True)
            raise
        note, record = _outcome(outcome)
        event._finish("done", note, attempt, record)
        return note or self.env._("done")

    def _wait_for_turn(self):
        """In-order processing: one event of the connector at a time, oldest first."""
        cr = self.env.cr
        cr.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [SEQUENTIAL_LOCK_NAMESPACE, self.connector_id.id])
        if not cr.fetchone()[0]:
            raise RetryableJobError(
                self.env._("Another event of this connector is being processed."),
                seconds=SEQUENTIAL_WAIT,
                ignore_retry=True,
            )
        ahead = self.search(
            [
                ("connector_id", "=", self.connector_id.id),
                ("state", "in", (*WAITING_STATES, "failed")),
                "|",
                ("received_at", "<", self.received_at),
                "&",
                ("received_at", "=", self.received_at),
                ("id", "<", self.id),
            ],
            order="received_at, id",
            limit=1,
        )
        if ahead:
            raise RetryableJobError(
                self.env._(
                    "Waiting for %(event)s (%(state)s), received before.", event=ahead.display_name, state=ahead.state
                ),
                seconds=SEQUENTIAL_WAIT,
                ignore_retry=True,
            )

    def _finish(self, state, note, attempt, record=None):
        values = {
            "state": state,
            "attempts": attempt,
            "processed_at": fields.Datetime.now(),
            "result_note": note or False,
            "last_error": False,
        }
        if record:
            values.update(res_model=record._name, res_id=record.id)
        self.sudo().write(values)

    def _fail(self, exc, attempt, permanent, gave_up=None):
        """Record a failed attempt through a fresh cursor (the job's transaction rolls back)."""
        connector = self.connector_id
        message = redact_text(f"{type(exc).__name__}: {exc}", connector._known_secret_values(), limit=ERROR_LIMIT)
        if gave_up:
            message = self.env._("%(error)s (gave up after %(max)s attempts)", error=message, max=gave_up)
        state = "failed" if permanent else "queued"
        job_uuid = self.env.context.get("job_uuid")
        with self.env.registry.cursor() as cr:
            env = self.env(cr=cr, user=SUPERUSER_ID)
            event = env[self._name].browse(self.id)
            event.write({"state": state, "attempts": attempt, "last_error": message})
            if permanent:
                event._message_log(body=self.env._("Processing failed: %s", message))
        if permanent:
            self.env["integration.error"]._record(
                connector,
                {
                    "operation": self.env._("Webhook %s", self.event_type or "?"),
                    "error_class": type(exc).__name__,
                    "is_retryable": bool(gave_up),
                    "message": message,
                    "request_excerpt": redact_text(self.payload or "", connector._known_secret_values(), limit=2000),
                    "traceback": redact_text(traceback.format_exc(limit=12), connector._known_secret_values()),
                    "res_model": self._name,
                    "res_id": self.id,
                    "job_uuid": job_uuid,
                },
            )

    # ------------------------------------------------------------------------------
    # Housekeeping
    # ------------------------------------------------------------------------------

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


class _GaveUp(Exception):
    """Raised when a transient failure spent the connector's attempts: the job fails."""


def _outcome(outcome):
    """(note, record) from what a handler returned."""
    if isinstance(outcome, models.BaseModel):
        record = outcome[:1]
        return (record.display_name if record else None), (record or None)
    if outcome is None:
        return None, None
    return str(outcome), None


def _payload_text(body):
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True


def _kept_headers(connector, headers):
    kept = {}
    for name, value in headers.items():
        if name.lower() in _SKIPPED_HEADERS or name.lower().startswith("x-forwarded"):
            continue
        kept[name] = redact_text(value, limit=500)
    # The connector's own signature header may have any name (e.g. X-Acme-Sig): masked too.
    return redact_headers(kept, extra_names=(connector.webhook_hmac_header,))


def _pretty(text):
    if not text:
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
    except ValueError:
        return text


def _notification(env, message):
    return {
        "type": "ir.actions.client",
        "tag": "display_notification",
        "params": {
            "title": env._("Webhook events"),
            "message": message,
            "type": "success",
            "next": {"type": "ir.actions.client", "tag": "soft_reload"},
        },
    }
