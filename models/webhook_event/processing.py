import math
import traceback

from odoo import SUPERUSER_ID, fields, models

from odoo.addons.queue_job.exception import RetryableJobError

from ...const import LOCK_WEBHOOK_SEQUENTIAL
from ...core import backoff, transport
from ...core.exceptions import WebhookEventFailed, WebhookEventGaveUp, WebhookEventUnhandled
from ...core.redact import redact_text
from ...core.textsafe import clean_text, is_storable

WAITING_STATES = ("received", "queued", "processing")

# Seconds an in-order event waits before looking again at the event ahead of it.
SEQUENTIAL_WAIT = 5

ERROR_LIMIT = 4000


class IntegrationWebhookEvent(models.Model):
    """Processing: the event's job runs the connector's handler, waits its turn on an
    in-order connector, and records the outcome (done, ignored, retried, failed)."""

    _inherit = "integration.webhook.event"

    def _job_process(self):
        """Queue job entry point: ``_process_event`` within the connector's job time limit."""
        with transport.time_limit(self.connector_id._job_time_limit()):
            return self._process_event()

    def _process_event(self):
        """Run the connector's handler for this event.

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
                raise WebhookEventGaveUp(
                    self.env._(
                        "%(error)s (gave up after %(max)s attempts)", error=clean_text(str(exc)), max=max_attempts
                    )
                ) from None
            seconds = exc.seconds or backoff.retry_delay(
                job_attempt - 1, connector.retry_backoff_base, connector.retry_backoff_cap, rng=backoff.jitter_random
            )
            event._fail(exc, attempt, permanent=False)
            raise RetryableJobError(
                clean_text(str(exc)), seconds=max(1, math.ceil(seconds)), ignore_retry=exc.ignore_retry
            ) from None
        except Exception as exc:
            event._fail(exc, attempt, permanent=True, inline=inline)
            if inline:
                return str(exc)
            if is_storable(traceback.format_exc()):  # what queue_job stores of the failure
                raise
            # A message quoting a NUL from the payload would fail queue_job's own write.
            raise WebhookEventFailed(clean_text(f"{type(exc).__name__}: {exc}")) from None
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
        cr.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_WEBHOOK_SEQUENTIAL, self.connector_id.id])
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


def _outcome(outcome):
    """(note, record) from what a handler returned."""
    if isinstance(outcome, models.BaseModel):
        record = outcome[:1]
        return (record.display_name if record else None), (record or None)
    if outcome is None:
        return None, None
    return clean_text(str(outcome)), None  # a handler's note may quote the payload
