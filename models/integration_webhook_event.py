import base64
import hashlib
import json
import logging
import math
import operator as py_operator
import traceback
import weakref
from datetime import timedelta

import psycopg2.errors

from odoo import SUPERUSER_ID, api, fields, models
from odoo.exceptions import UserError
from odoo.tools import SQL

from odoo.addons.queue_job.exception import RetryableJobError

from ..core.autocommit import AutocommitPool
from ..core.backoff import retry_delay
from ..core.redact import redact_headers, redact_text
from .integration_connector import _jitter_random
from .integration_connector_state import connect, state_cursor
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
# Received events that may be given a job now: all of a connector that processes in
# any order; for an in-order connector, its oldest waiting event, once no other event
# of it is queued, processing or failed (a failed event holds the line until an operator
# retries or ignores it).
READY_TO_QUEUE = SQL("""
    e.state = 'received' AND (
        NOT EXISTS (SELECT 1 FROM integration_connector c
                     WHERE c.id = e.connector_id AND c.webhook_sequential)
        OR NOT EXISTS (SELECT 1 FROM integration_webhook_event o
                        WHERE o.connector_id = e.connector_id AND o.id <> e.id
                          AND (o.state IN ('queued', 'processing', 'failed')
                               OR (o.state = 'received' AND (o.received_at, o.id) < (e.received_at, e.id)))))
""")
# Headers never worth keeping with an event (hop-by-hop, or identical on every delivery).
OPERATORS = {
    "=": py_operator.eq,
    "!=": py_operator.ne,
    ">": py_operator.gt,
    ">=": py_operator.ge,
    "<": py_operator.lt,
    "<=": py_operator.le,
}
_SKIPPED_HEADERS = frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "host", "accept-encoding"}
)


# The inbox's one statement per delivery: the look-up, the insert, and whether a dispatcher
# waits. An event already stored is looked up first and not inserted again: inserting its key
# would wait for whatever transaction (its job, say) has written the stored row and not
# committed yet. The look-up is two probes, one per unique index (an OR of the two would let
# a plan scan all of the connector's events). No "created by": nobody in Odoo did, and a NULL
# skips a foreign-key check. A stored event still received 10 s after it came, with no dispatcher waiting, lost the
# dispatcher its first delivery queued (in a request that failed after the event committed):
# a repeated delivery queues one again. (Within those seconds the first request is still
# committing its dispatcher.)
_INGEST_PARAMS = (
    ("connector_id", "int4"),
    ("company_id", "int4"),
    ("event_id", "varchar"),
    ("event_type", "varchar"),
    ("signed_at", "timestamp"),
    ("remote_addr", "varchar"),
    ("headers", "text"),
    ("payload", "text"),
    ("payload_is_base64", "bool"),
    ("payload_size", "int4"),
    ("payload_hash", "varchar"),
    ("dispatch_key", "varchar"),
)
_INGEST_TEMPLATE = """
    WITH stored AS (
        SELECT id, state = 'received' AND received_at < (now() AT TIME ZONE 'UTC') - interval '10 seconds'
                   AS undispatched
          FROM ((SELECT id, state, received_at FROM integration_webhook_event
                  WHERE connector_id = {connector_id} AND event_id = {event_id} LIMIT 1)
                UNION ALL
                (SELECT id, state, received_at FROM integration_webhook_event
                  WHERE connector_id = {connector_id} AND payload_hash = {payload_hash} LIMIT 1)) AS found
         LIMIT 1),
    inserted AS (
        INSERT INTO integration_webhook_event (
            connector_id, company_id, event_id, event_type, signed_at, remote_addr, headers,
            payload, payload_is_base64, payload_size, payload_hash, state, attempts,
            received_at, create_date, write_date)
        SELECT {connector_id}, {company_id}, {event_id}, {event_type}, {signed_at}, {remote_addr}, {headers},
               {payload}, {payload_is_base64}, {payload_size}, {payload_hash}, 'received', 0,
               now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
         WHERE NOT EXISTS (SELECT 1 FROM stored)
        ON CONFLICT DO NOTHING
        RETURNING id)
    SELECT (SELECT id FROM inserted),
           EXISTS (SELECT 1 FROM queue_job WHERE identity_key = {dispatch_key}
                      AND state IN ('wait_dependencies', 'pending', 'enqueued')),
           (SELECT undispatched FROM stored)
"""
# In the caller's transaction, with psycopg2's named parameters.
_INGEST_SQL = _INGEST_TEMPLATE.format(**{name: f"%({name})s" for name, _type in _INGEST_PARAMS})
# Prepared once per inbox connection, with typed positional parameters.
_INGEST_STATEMENT = "integration_webhook_ingest"
_INGEST_PREPARED = (
    [sql_type for _name, sql_type in _INGEST_PARAMS],
    _INGEST_TEMPLATE.format(**{name: f"${number}" for number, (name, _type) in enumerate(_INGEST_PARAMS, 1)}),
)
_INGEST_EXECUTE = "EXECUTE {}({})".format(_INGEST_STATEMENT, ", ".join(["%s"] * len(_INGEST_PARAMS)))
# The inbox connections: durable commits (an event is answered 202 only once it is on disk).
# The prepared statement keeps one generic plan for the session's life, made from the
# statistics of the moment: made while the events or jobs table was empty, it would scan the
# whole table on every delivery once it has grown, until an ANALYZE happens to replan it.
# Every look-up of the statement (and of its foreign-key checks) is an equality on a unique
# or partial index, so these sessions do without sequential scans: the plan stays an index
# probe whatever the statistics said when it was made.
_inbox_pool = AutocommitPool(
    connect,
    settings=["SET application_name TO 'integration_hub webhook inbox'", "SET enable_seqscan TO off"],
    prepared={_INGEST_STATEMENT: _INGEST_PREPARED},
)
# Inbox connections whose prepared statement went missing (see _ingest).
_unprepared_sessions = weakref.WeakSet()


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
            event.payload_pretty = _pretty(event.payload) if not event.payload_is_base64 else event.payload
            event.headers_pretty = _pretty(event.headers)

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
        running = events.filtered(lambda e: e.sudo().job_id.state == "started")
        if running:
            raise UserError(
                self.env._(
                    "%s is being processed right now; wait for the result, then mark it ignored if needed.",
                    running[0].display_name,
                )
            )
        for event in events.sudo():
            if event.job_id.state in ("pending", "enqueued", "wait_dependencies"):
                event.job_id.button_cancelled()
            event.write({"state": "ignored", "processed_at": fields.Datetime.now()})
            event._message_log(body=self.env._("Marked ignored by %s.", self.env.user.name))
        for connector in events.connector_id.filtered("webhook_sequential"):
            self.sudo()._queue_next_in_line(connector)  # the events held behind may go now
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
        # Before the jobs: one run inline (queue_job's no-delay switch) may record a new error.
        errors = (
            self.env["integration.error"]
            .sudo()
            .search([("res_model", "=", self._name), ("res_id", "in", self.ids), ("state", "=", "new")])
        )
        errors.write({"state": "resolved"})
        for event in self.sudo():
            if event.job_id.state == "failed":
                event.job_id.button_cancelled()  # superseded: one failed job per event, not two
            event.write({"state": "queued", "last_error": False})
            event._message_log(body=note)
            event._enqueue()

    # ------------------------------------------------------------------------------
    # Receiving
    # ------------------------------------------------------------------------------

    @api.model
    def _ingest(self, connector, body, headers, event_id, event_type, signed_at=None, remote_addr=None, commit=False):
        """Store a verified delivery once and make sure a dispatcher job will queue its
        processing job.

        The per-event job is created by the dispatcher (``_job_dispatch_received``), in
        batches, so that the request costs one statement: senders are waiting.

        :param connector: the connector's ``WebhookReceiver`` (``_webhook_receiver``)
        :param commit: store and commit the event at once on an inbox connection of its own
            (the route), with a statement prepared once per connection, instead of in the
            caller's transaction; the dispatcher job, when one is needed, is still queued in
            the caller's transaction (should that one fail, a repeated delivery or the
            dispatch cron queues it again)
        :return: ``(event id, True)`` when stored now, ``(event id, False)`` for a duplicate
            of an event already stored (not stored again; counted, and no new processing job)
        """
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
            "dispatch_key": DISPATCH_IDENTITY_KEY,
        }
        if commit:
            # Autocommit, read-committed: a concurrent delivery of the same event waits for
            # ours at the unique index, then finds it there (ON CONFLICT DO NOTHING).
            with _inbox_pool.cursor(self.env.cr.dbname) as cr:
                if cr.connection in _unprepared_sessions:
                    cr.execute(_INGEST_SQL, values)
                else:
                    try:
                        cr.execute(_INGEST_EXECUTE, [values[name] for name, _type in _INGEST_PARAMS])
                    except psycopg2.errors.InvalidSqlStatementName:
                        # The session lost its prepared statement (a pooler in transaction
                        # mode between Odoo and PostgreSQL, a DISCARD): from now on, this
                        # connection runs the same statement unprepared.
                        _unprepared_sessions.add(cr.connection)
                        cr.execute(_INGEST_SQL, values)
                record_id, dispatcher_waiting, undispatched = cr.fetchone()
            committed_elsewhere = True
        else:
            cr = self.env.cr
            committed_elsewhere = False
            try:
                with cr.savepoint(flush=False):
                    cr.execute(_INGEST_SQL, values, log_exceptions=False)  # a concurrent duplicate is expected
                    record_id, dispatcher_waiting, undispatched = cr.fetchone()
            except psycopg2.errors.SerializationFailure:
                # The same event was stored by a transaction that committed after ours began.
                record_id, dispatcher_waiting, undispatched, committed_elsewhere = None, True, False, True
        if record_id is None:
            duplicate_of = self._count_duplicate(
                connector.id, event_id, values["payload_hash"], committed_elsewhere=committed_elsewhere
            )
            if undispatched and not dispatcher_waiting:
                self._schedule_dispatch()
            return duplicate_of, False
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
        """Queue job: give received events their processing job (and state queued).

        One batch per job, so that a transaction stays short; another dispatcher is
        queued when more events are ready. Events of an in-order connector are given a
        job one at a time: only the oldest, and only when none of the connector's events
        is queued or failed (the job that finishes one queues a dispatcher for the next).
        Several dispatchers may run at once: each locks the rows it takes (SKIP LOCKED).
        """
        self.flush_model()
        self.env["integration.connector"].flush_model(["webhook_sequential"])
        self.env.cr.execute(
            SQL(
                "SELECT e.id FROM integration_webhook_event e WHERE %s"
                " ORDER BY e.id LIMIT %s FOR UPDATE OF e SKIP LOCKED",
                READY_TO_QUEUE,
                DISPATCH_BATCH,
            )
        )
        ids = [row[0] for row in self.env.cr.fetchall()]
        events = self.browse(ids)
        events.fetch(["connector_id", "event_type", "company_id"])  # not the payloads
        for event in events:
            event._enqueue()
        # Events stored after this transaction began are invisible to it, and the ones it
        # took still look received to others until it commits: look through a
        # read-committed connection for ready events it did not take.
        with state_cursor(self.env.cr.dbname) as cr:
            query = SQL(
                "SELECT 1 FROM integration_webhook_event e WHERE %s AND NOT (e.id = ANY(%s)) LIMIT 1",
                READY_TO_QUEUE,
                ids,
            )
            cr.execute(query.code, query.params)
            more = cr.fetchone()
        if more:
            self._schedule_dispatch()
        return self.env._("%s event(s) queued.", len(ids))

    @api.model
    def _cron_dispatch_received(self):
        """Safety net, every few minutes: queue a dispatcher if ready events wait without
        one (e.g. its job failed), and settle events whose job ended without them."""
        self.flush_model()
        self.env["integration.connector"].flush_model(["webhook_sequential"])
        self.env.cr.execute(
            SQL(
                "SELECT 1 FROM integration_webhook_event e WHERE %s"
                " AND e.received_at < (now() AT TIME ZONE 'UTC') - interval '1 minute' LIMIT 1",
                READY_TO_QUEUE,
            )
        )
        if self.env.cr.fetchone():
            self._schedule_dispatch()
        self._settle_stranded()

    @api.model
    def _settle_stranded(self):
        """Events shown waiting whose job will never run them (cancelled, failed outside
        the handler, or deleted from the job queue). Left alone they would wait for ever
        and, on an in-order connector, hold back every later event.

        - job cancelled (in the Job Queue menu): the event is ignored;
        - job failed: the event is failed, with the job's error, and can be retried;
        - job gone or done: the event is queued again.
        """
        self.env["queue.job"].flush_model(["state", "exc_message"])
        self.env.cr.execute(
            """SELECT e.id, j.state, j.exc_message FROM integration_webhook_event e
                 LEFT JOIN queue_job j ON j.id = e.job_id
                WHERE e.state IN ('queued', 'processing')
                  AND (j.id IS NULL OR j.state IN ('done', 'cancelled', 'failed'))
                ORDER BY e.id LIMIT %s""",
            [DISPATCH_BATCH],
        )
        rows = self.env.cr.fetchall()
        for event_id, job_state, job_error in rows:
            event = self.browse(event_id)
            if job_state == "cancelled":
                event.write({"state": "ignored", "processed_at": fields.Datetime.now()})
                event._message_log(body=self.env._("Its job was cancelled in the job queue: marked ignored."))
            elif job_state == "failed":
                message = self.env._("The job failed outside the handler: %s", job_error or "?")
                event.write({"state": "failed", "last_error": message})
                event._message_log(body=message)
            else:
                event._message_log(body=self.env._("It had no job left to run it: queued again."))
                event._enqueue()
        if rows:
            _logger.info("Settled %d webhook event(s) left without a job", len(rows))
            self._schedule_dispatch()  # an in-order connector may be free again
        return len(rows)

    @api.model
    def _count_duplicate(self, connector_id, event_id, payload_hash=None, committed_elsewhere=False):
        """Count one more delivery of a stored event; returns the event's id.

        The count goes to ``integration.webhook.duplicate``, never to the event row, which
        the event's job may be writing at the same moment.
        """
        query = """
            INSERT INTO integration_webhook_duplicate AS d (event_id, count, last_at)
            SELECT id, 1, now() AT TIME ZONE 'UTC' FROM integration_webhook_event
             WHERE connector_id = %s AND (event_id = %s OR payload_hash = %s)
             ORDER BY id LIMIT 1
            ON CONFLICT (event_id) DO UPDATE SET count = d.count + 1, last_at = EXCLUDED.last_at
            RETURNING event_id
        """
        if not committed_elsewhere:
            try:
                with self.env.cr.savepoint(flush=False):
                    self.env.cr.execute(query, [connector_id, event_id, payload_hash], log_exceptions=False)
                    row = self.env.cr.fetchone()
                    return row and row[0]
            except psycopg2.errors.SerializationFailure:
                # Another delivery was counted meanwhile: count on a connection that sees it.
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
        # Nothing is stored when queue_job's no-delay switch (tests, debugging) ran the
        # processing inline: the event then stays as the run left it.
        self.flush_recordset(["state", "job_id"])
        self.env.cr.execute(
            """UPDATE integration_webhook_event e
                  SET job_id = j.id,
                      state = CASE WHEN e.state = 'received' THEN 'queued' ELSE e.state END
                 FROM queue_job j
                WHERE j.uuid = %s AND e.id = %s""",
            [job.uuid, self.id],
        )
        self.invalidate_recordset(["job_id", "state"])

    # ------------------------------------------------------------------------------
    # Processing
    # ------------------------------------------------------------------------------

    def _job_process(self):
        """Queue job entry point: run the connector's handler for this event.

        The handler runs in a savepoint. In a real job, a failure is written through a
        fresh cursor (this transaction is about to roll back) and then raised, so that
        queue_job retries the job (transient) or marks it failed (permanent, or attempts
        spent). Run inline (queue_job's no-delay switch: tests, debugging), there is no
        job to retry and the caller may hold the event's row: the failure is written in
        this transaction and returned.
        """
        self.ensure_one()
        event = self.with_company(self.company_id)
        if event.state not in ("received", "queued", "processing", "failed"):
            return self.env._("Nothing to do: the event is %s.", event.state)
        # Failures of calls the handler makes are linked to this event in the error log.
        event = event.with_context(integration_related_model=self._name, integration_related_id=self.id)
        connector = event.connector_id
        job_uuid = self.env.context.get("job_uuid")
        job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1) if job_uuid else None
        inline = not job
        if connector.webhook_sequential:
            ahead = event._wait_for_turn()
            if ahead:
                return ahead
        job_attempt = (job.retry if job else 0) + 1  # this job's runs decide when to give up
        attempt = event.attempts + 1  # the event's runs, across Retry and Reprocess
        try:
            with self.env.cr.savepoint():
                outcome = connector._webhook_process_event(event)
        except WebhookEventUnhandled as exc:
            if connector.webhook_unhandled == "fail":
                event._fail(exc, attempt, permanent=True, inline=inline)
                if inline:
                    return str(exc)
                raise
            event._finish("ignored", str(exc), attempt)
            return str(exc)
        except RetryableJobError as exc:
            max_attempts = min(connector.retry_max_attempts, job.max_retries if job and job.max_retries else 10**6)
            if inline or job_attempt >= max_attempts:
                gave_up = None if inline else max_attempts
                event._fail(exc, attempt, permanent=True, gave_up=gave_up, inline=inline)
                if inline:
                    return str(exc)
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
            event._fail(exc, attempt, permanent=True, inline=inline)
            if inline:
                return str(exc)
            raise
        note, record = _outcome(outcome)
        event._finish("done", note, attempt, record)
        return note or self.env._("done")

    def _wait_for_turn(self):
        """In-order processing: one event of the connector at a time, oldest first.

        The dispatcher gives a job only to a connector's oldest waiting event, so this
        mostly confirms it. It matters for Retry and Reprocess, which queue an event out
        of turn: an event with older ones still open goes back in line (received) and the
        dispatcher gives it a job when its turn comes. Returns a note when it went back.
        """
        cr = self.env.cr
        cr.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [SEQUENTIAL_LOCK_NAMESPACE, self.connector_id.id])
        if not cr.fetchone()[0]:
            # Another event of the connector is being processed right now: a short wait.
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
        if not ahead:
            return None
        note = self.env._(
            "Back in line behind %(event)s (%(state)s), received before.", event=ahead.display_name, state=ahead.state
        )
        self.sudo().write({"state": "received", "result_note": note})
        return note

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
        if self.connector_id.webhook_sequential:
            self._queue_next_in_line(self.connector_id)

    @api.model
    def _queue_next_in_line(self, connector):
        """In-order connector: give its next waiting event a job, in the transaction that
        settles the one before it, so that the line moves on exactly when that commits
        (a dispatcher started meanwhile would still see the settled event open)."""
        self.flush_model()
        self.env.cr.execute(
            SQL(
                "SELECT e.id FROM integration_webhook_event e WHERE e.connector_id = %s AND %s"
                " ORDER BY e.received_at, e.id LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
                connector.id,
                READY_TO_QUEUE,
            )
        )
        row = self.env.cr.fetchone()
        if row:
            self.sudo().browse(row[0])._enqueue()

    def _fail(self, exc, attempt, permanent, gave_up=None, inline=False):
        """Record a failed attempt: through a fresh cursor in a job (whose transaction
        rolls back), in this transaction when run inline (see ``_job_process``)."""
        connector = self.connector_id
        message = redact_text(f"{type(exc).__name__}: {exc}", connector._known_secret_values(), limit=ERROR_LIMIT)
        if gave_up:
            message = self.env._("%(error)s (gave up after %(max)s attempts)", error=message, max=gave_up)
        state = "failed" if permanent else "queued"
        job_uuid = self.env.context.get("job_uuid")
        if inline:
            written = self._write_failure(self.env(user=SUPERUSER_ID), state, attempt, message, permanent)
        else:
            with self.env.registry.cursor() as cr:
                written = self._write_failure(self.env(cr=cr, user=SUPERUSER_ID), state, attempt, message, permanent)
        if permanent and written:
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
                    "job_uuid": None if inline else job_uuid,
                },
                same_transaction=inline,
            )

    def _write_failure(self, env, state, attempt, message, permanent):
        event = env[self._name].browse(self.id)
        if event.state not in ("received", "queued", "processing", "failed"):
            # Settled meanwhile (an operator marked it ignored): that decision stands.
            return False
        event.write({"state": state, "attempts": attempt, "last_error": message})
        if permanent:
            event._message_log(body=env._("Processing failed: %s", message))
        return True

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
