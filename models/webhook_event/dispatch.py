import hashlib
import logging

from odoo import SUPERUSER_ID, api, fields, models
from odoo.tools import SQL

from ...const import DISPATCH_IDENTITY_KEY, LOCK_WEBHOOK_LINE
from ..integration_connector_state import state_cursor

_logger = logging.getLogger(__name__)

# Before the event jobs it creates, which have queue_job's default priority (10).
DISPATCH_PRIORITY = 5

# Events a dispatcher run takes. Cheap per event once events share jobs (one job and one
# update per batch); with one job per event, still one short transaction.
DISPATCH_BATCH = 2000

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


class IntegrationWebhookEvent(models.Model):
    """Dispatch: received events get their processing job, in batches, in order where the
    connector asks for it; the cron catches what a lost job left behind."""

    _inherit = "integration.webhook.event"

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
            description=self.env._("Queue received webhook events"),
            identity_key=DISPATCH_IDENTITY_KEY,
            priority=DISPATCH_PRIORITY,
        )._job_dispatch_received()

    @api.model
    def _job_dispatch_received(self):
        """Queue job: give received events their processing job (and state queued).

        Up to ``DISPATCH_BATCH`` events per run, so that a transaction stays short; another
        dispatcher is queued when more events are ready. A job takes up to the connector's
        *Events per Job* events (one connector's, oldest first). An in-order connector's
        line gets one job at a time: its oldest events, and only when none of them is
        queued or failed (the job that settles the last of a batch queues the next one).
        Several dispatchers may run at once: each locks the rows it takes (SKIP LOCKED).
        """
        self.flush_model()
        self.env["integration.connector"].flush_model(["webhook_sequential", "webhook_batch_size"])
        # Any-order connectors: the oldest received events, grouped into jobs per connector.
        self.env.cr.execute(
            """SELECT e.id FROM integration_webhook_event e
                 JOIN integration_connector c ON c.id = e.connector_id
                WHERE e.state = 'received' AND NOT COALESCE(c.webhook_sequential, false)
                ORDER BY e.id LIMIT %s FOR UPDATE OF e SKIP LOCKED""",
            [DISPATCH_BATCH],
        )
        ids = [row[0] for row in self.env.cr.fetchall()]
        events = self.browse(ids)
        events.fetch(["connector_id", "event_type", "company_id"])  # not the payloads
        events._enqueue()
        # In-order connectors whose line may move: their oldest events, one job.
        self.env.cr.execute(
            SQL(
                "SELECT DISTINCT e.connector_id FROM integration_webhook_event e"
                " JOIN integration_connector c ON c.id = e.connector_id AND c.webhook_sequential WHERE %s",
                READY_TO_QUEUE,
            )
        )
        for (connector_id,) in self.env.cr.fetchall():
            ids += self._queue_next_in_line(self.env["integration.connector"].browse(connector_id)).ids
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
        requeue = self.browse()
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
                requeue |= event
        requeue._enqueue()
        if rows:
            _logger.info("Settled %d webhook event(s) left without a job", len(rows))
            self._schedule_dispatch()  # an in-order connector may be free again
        return len(rows)

    def _enqueue(self):
        """Create the processing jobs of these events (as superuser, in each connector's
        company): per connector, one job per *Events per Job* events, oldest first."""
        for connector in self.connector_id:
            events = self.filtered(lambda event, connector=connector: event.connector_id == connector)
            events = events.sorted(lambda event: (event.received_at, event.id))
            size = max(connector.webhook_batch_size, 1)
            for start in range(0, len(events), size):
                events[start : start + size]._enqueue_job(connector)

    def _enqueue_job(self, connector):
        ids = self.ids
        if len(self) == 1:
            description = self.env._(
                "%(connector)s: webhook %(type)s", connector=connector.name, type=self.event_type or "?"
            )
            identity_key = f"integration.webhook.event:{ids[0]}"
        else:
            description = self.env._(
                "%(connector)s: %(count)s webhook events", connector=connector.name, count=len(ids)
            )
            digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:32]
            identity_key = f"integration.webhook.events:{digest}"
        job = (
            self.with_user(SUPERUSER_ID)
            .with_company(connector.company_id)
            .with_context(tracking_disable=True)  # the job record's creation, not its run
            .with_delay(
                **connector._job_delay_params(),
                description=description,
                identity_key=identity_key,
                max_retries=connector.retry_max_attempts + 1,
            )
            ._job_process()
        )
        # Nothing is stored when queue_job's no-delay switch (tests, debugging) ran the
        # processing inline: the events then stay as the run left them.
        self.flush_recordset(["state", "job_id"])
        self.env.cr.execute(
            """UPDATE integration_webhook_event e
                  SET job_id = j.id,
                      state = CASE WHEN e.state = 'received' THEN 'queued' ELSE e.state END
                 FROM queue_job j
                WHERE j.uuid = %s AND e.id = ANY(%s)""",
            [job.uuid, ids],
        )
        self.invalidate_recordset(["job_id", "state"])

    @api.model
    def _queue_next_in_line(self, connector):
        """In-order connector: give its next waiting events (up to *Events per Job*) a job,
        in the transaction that settles the one before them, so that the line moves on
        exactly when that commits (a dispatcher started meanwhile would still see the
        settled event open). Returns the events queued.

        Only when none of the connector's events is queued, processing or failed. Two
        transactions never both give the line a job: they take turns on a lock, and the
        second then sees the first one's job, or fails to serialize (its snapshot is older
        than the first one's commit) and is retried.
        """
        self.flush_model()
        self.env.cr.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_WEBHOOK_LINE, connector.id])
        self.env.cr.execute(
            """SELECT e.id FROM integration_webhook_event e
                WHERE e.connector_id = %s AND e.state = 'received'
                  AND NOT EXISTS (SELECT 1 FROM integration_webhook_event o
                                   WHERE o.connector_id = e.connector_id
                                     AND o.state IN ('queued', 'processing', 'failed'))
                ORDER BY e.received_at, e.id LIMIT %s FOR UPDATE OF e""",
            [connector.id, max(connector.webhook_batch_size, 1)],
        )
        events = self.sudo().browse([row[0] for row in self.env.cr.fetchall()])
        if events:
            events._enqueue()
        return events
