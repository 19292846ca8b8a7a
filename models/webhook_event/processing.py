import logging
import math
import time
import traceback
from collections import Counter

import psycopg2

from odoo import SUPERUSER_ID, fields, models

from odoo.addons.queue_job.controllers.main import PG_CONCURRENCY_ERRORS_TO_RETRY
from odoo.addons.queue_job.exception import RetryableJobError

from ...const import LOCK_WEBHOOK_SEQUENTIAL
from ...core import backoff, transport
from ...core.exceptions import WebhookEventFailed, WebhookEventGaveUp, WebhookEventUnhandled
from ...core.redact import redact_text
from ...core.textsafe import clean_text, is_storable

_logger = logging.getLogger(__name__)

WAITING_STATES = ("received", "queued", "processing")

# States in which a job still has work to do on an event.
PROCESSABLE_STATES = (*WAITING_STATES, "failed")

# Longest a batch keeps finished events uncommitted (see _process_batch).
COMMIT_INTERVAL = 1.0

# Seconds before an event that met a lock or serialization conflict is tried again.
CONFLICT_RETRY = 5

# Seconds an in-order event waits before looking again at the event ahead of it.
SEQUENTIAL_WAIT = 5

ERROR_LIMIT = 4000


class IntegrationWebhookEvent(models.Model):
    """Processing: the event's job runs the connector's handler, waits its turn on an
    in-order connector, and records the outcome (done, ignored, retried, failed)."""

    _inherit = "integration.webhook.event"

    def _job_process(self):
        """Queue job entry point: process these events, one connector's, oldest first.

        A job holds one event, or a batch of up to the connector's *Events per Job* (the
        dispatcher's choice). Each event runs the handler in a savepoint within the
        connector's job time limit and gets its own outcome, attempts and error: a failing
        event neither fails nor repeats its neighbours. In a real job the outcomes are
        committed as the batch goes: right after each event that reached a remote, and at
        least every ``COMMIT_INTERVAL`` otherwise. A worker killed mid-batch loses at most
        that last second of work, undone in the database together with the events' states;
        queue_job requeues the job, whose rerun skips the events already settled and does
        the others, so that nothing happens twice.

        The job itself is retried while some of its events wait for another attempt (the
        events done stay done), and fails only when every event it ran failed: a job of
        one event fails with that event's error, as before batches. On an in-order
        connector the batch stops at the first event that is not done, and the events
        after it go back in line.

        Run inline (queue_job's no-delay switch: tests, debugging), there is no job to
        retry and the caller may hold the events' rows: outcomes are written in the
        caller's transaction, nothing is committed, and a summary is returned.
        """
        job_uuid = self.env.context.get("job_uuid")
        job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1) if job_uuid else None
        if not job:
            return self._process_batch(None, commit=None)
        # A transaction of the batch's own, committed after each event: the job's transaction
        # holds queue_job's lock on the job until the job ends, so that the job never looks
        # dead to the requeuer while it runs (queue_job refuses commits on that one).
        with self.env.registry.cursor() as cr:
            events = self.with_env(self.env(cr=cr))
            return events._process_batch(job.with_env(events.env), commit=cr.commit)

    def _process_batch(self, job, commit):
        events = self.exists().sorted(lambda event: (event.received_at, event.id))
        rerun = bool(job and job.retry)  # queue_job resets the count when an operator requeues
        job_attempt = (job.retry if job else 0) + 1  # this job's runs decide when to give up
        todo = events.filtered(lambda event: event._still_to_do(job, rerun))
        counts = Counter(settled=len(events) - len(todo))
        retries, failures = [], []
        committed_at = time.monotonic()
        limits, max_attempts = {}, {}
        for connector in todo.connector_id:  # read once per batch: a commit empties the caches
            limits[connector.id] = connector._job_time_limit()
            max_attempts[connector.id] = connector._job_max_attempts(job) if job else 1
            # Records written in bulk and their events' outcomes land together.
            bulk_done = todo._process_in_bulk(connector, limits[connector.id])
            counts["done"] += len(bulk_done)
            todo -= bulk_done
        if commit and counts["done"]:
            commit()
            committed_at = time.monotonic()
        for index, event in enumerate(todo):
            connector = event.connector_id
            sent = transport.requests_sent()
            with transport.time_limit(limits[connector.id]):
                outcome, detail = event._process_one(job_attempt, max_attempts[connector.id], bool(job))
            counts[outcome] += 1
            if outcome == "retry":
                retries.append(detail)
            elif outcome == "failed":
                failures.append(detail)
            stop = outcome in ("waiting", "failed", "retry") and connector.webhook_sequential
            stop = stop or (outcome == "retry" and detail.ignore_retry)  # a breaker or budget: all would wait
            if stop:
                if outcome != "retry":  # a retried batch takes them up again, in order
                    todo[index + 1 :]._back_in_line(event)
                counts["not reached"] += len(todo) - index - 1
            # Outcomes are committed as they come, in groups: at least every COMMIT_INTERVAL,
            # and right after an event that reached a remote (a worker killed later must not
            # make it call again). A commit empties the caches: one per event would read the
            # connector, the rule and the job again for each.
            if commit and (sent != transport.requests_sent() or time.monotonic() - committed_at > COMMIT_INTERVAL):
                commit()
                committed_at = time.monotonic()
            if stop:
                break
        if commit:
            commit()
        note = _summary(self.env, counts)
        if job and retries:
            # What the job queue shows: the event's own error, or the batch's count and the first.
            message = str(retries[0]) if len(events) == 1 else f"{note}; {retries[0]}"
            raise RetryableJobError(
                message,
                seconds=min(retry.seconds for retry in retries),
                # A run that only waited (breaker, budget) does not count, unless events
                # failed in it: the next run must know it is one, and not run them again.
                ignore_retry=all(retry.ignore_retry for retry in retries) and not failures,
            )
        if job and failures and not (counts["done"] or counts["ignored"]):
            raise failures[-1]  # nothing of the job succeeded: the job fails with the (last) error
        if not job and len(events) == 1 and failures:
            return str(failures[0])
        return note

    def _still_to_do(self, job, rerun):
        """Whether this event is this job's to process now: still its job's (Retry gives an
        event a job of its own), and not settled by an earlier run of the job (one a dead
        worker left, say). Failed events run again only when an operator asks: Retry, or
        Requeue of the job in the job queue (which resets its count of runs)."""
        self.ensure_one()
        if job and self.job_id.id != job.id:
            return False
        return self.state in PROCESSABLE_STATES and not (rerun and self.state == "failed")

    def _process_in_bulk(self, connector, limit):
        """Offer the connector's events among these to its bulk processing
        (``_webhook_process_events``), in a savepoint, and mark done those it did; returns
        them. Not on an in-order connector, whose events go one at a time, nor for one event.
        """
        events = self.filtered(lambda event: event.connector_id == connector)
        if len(events) < 2 or connector.webhook_sequential:
            return self.browse()
        related = events.with_company(connector.company_id).with_context(integration_related_model=self._name)
        try:
            with transport.time_limit(limit), self.env.cr.savepoint():
                done = connector.with_company(connector.company_id)._webhook_process_events(related)
                finished = self.browse()
                for event in events.filtered(lambda event: event.id in done):
                    note, record = _outcome(done[event.id])
                    event._finish("done", note, event.attempts + 1, record)
                    finished |= event
                return finished
        except Exception as exc:  # noqa: BLE001 - each event then gets its own outcome, one by one
            _logger.info(
                "Connector %s: %d event(s) processed one by one after bulk processing failed: %s",
                connector.code,
                len(events),
                redact_text(f"{type(exc).__name__}: {exc}", connector._known_secret_values(), limit=500),
            )
            return self.browse()

    def _process_one(self, job_attempt, max_attempts, in_job):
        """Run the connector's handler for this event and record the outcome.

        :param job_attempt: the job's run (1 for its first), which decides when to give up
        :param max_attempts: the attempts the job gets
        :param in_job: False when run inline (no job to retry: a retryable failure fails)
        :return: ``(outcome, detail)``: ``("done", note)``, ``("ignored", note)``,
            ``("waiting", note)`` (an in-order event back in line), ``("retry",
            RetryableJobError)`` (tried again with the job), ``("failed", exception)``
        """
        self.ensure_one()
        event = self.with_company(self.company_id)
        # Failures of calls the handler makes are linked to this event in the error log.
        event = event.with_context(integration_related_model=self._name, integration_related_id=self.id)
        connector = event.connector_id
        if connector.webhook_sequential:
            ahead = event._wait_for_turn()
            if ahead:
                return "waiting", ahead
        attempt = event.attempts + 1  # the event's runs, across Retry and Reprocess
        try:
            with self.env.cr.savepoint():
                outcome = connector._webhook_process_event(event)
                note, record = _outcome(outcome)
                event._finish("done", note, attempt, record)  # written (flushed) with the handler's work
        except WebhookEventUnhandled as exc:
            if connector.webhook_unhandled == "fail":
                event._fail(exc, attempt, permanent=True, same_transaction=True)
                return "failed", exc
            event._finish("ignored", str(exc), attempt)
            return "ignored", str(exc)
        except psycopg2.OperationalError as exc:
            if exc.pgcode not in PG_CONCURRENCY_ERRORS_TO_RETRY:
                return event._failed(exc, attempt)
            # Another transaction holds or changed the same rows: a transient conflict, which
            # queue_job retries for a job of one; the batch's next run has a fresh snapshot.
            exc = RetryableJobError(f"{type(exc).__name__}: {exc.pgerror or exc}", seconds=CONFLICT_RETRY)
            return event._retried(exc, attempt, job_attempt, max_attempts, in_job)
        except RetryableJobError as exc:
            return event._retried(exc, attempt, job_attempt, max_attempts, in_job)
        except Exception as exc:  # noqa: BLE001 - stored on the event, which fails (see _failed)
            return event._failed(exc, attempt)
        return "done", note

    def _retried(self, exc, attempt, job_attempt, max_attempts, in_job):
        """A transient failure: ``("retry", error)`` while the job has runs left, else the
        event fails ("gave up after N attempts")."""
        if not in_job or job_attempt >= max_attempts:
            gave_up = max_attempts if in_job else None
            self._fail(exc, attempt, permanent=True, gave_up=gave_up, same_transaction=True)
            if not in_job:
                return "failed", exc
            return "failed", WebhookEventGaveUp(
                self.env._("%(error)s (gave up after %(max)s attempts)", error=clean_text(str(exc)), max=max_attempts)
            )
        connector = self.connector_id
        seconds = exc.seconds or backoff.retry_delay(
            job_attempt - 1, connector.retry_backoff_base, connector.retry_backoff_cap, rng=backoff.jitter_random
        )
        self._fail(exc, attempt, permanent=False, same_transaction=True)
        return "retry", RetryableJobError(
            clean_text(str(exc)), seconds=max(1, math.ceil(seconds)), ignore_retry=exc.ignore_retry
        )

    def _failed(self, exc, attempt):
        """A permanent failure: the event fails with its error; ``("failed", error)``."""
        self._fail(exc, attempt, permanent=True, same_transaction=True)
        if is_storable(traceback.format_exc()):  # what queue_job stores of the failure
            return "failed", exc
        # A message quoting a NUL from the payload would fail queue_job's own write.
        return "failed", WebhookEventFailed(clean_text(f"{type(exc).__name__}: {exc}"))

    def _back_in_line(self, behind):
        """In-order batch stopped at ``behind``: these later events of it wait their turn
        again (received, no job); the dispatcher gives them one when the line moves."""
        waiting = self.filtered(lambda event: event.state in ("received", "queued"))
        if waiting:
            note = self.env._("Back in line behind %s.", behind.display_name)
            waiting.sudo().write({"state": "received", "job_id": False, "result_note": note})

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
        # The outcome is on the event (state, time, result): no chatter line per event, which
        # would cost a message and a tracking value for each of thousands of events an hour.
        self.sudo().with_context(tracking_disable=True).write(values)
        if self.connector_id.webhook_sequential:
            self._queue_next_in_line(self.connector_id)

    def _fail(self, exc, attempt, permanent, gave_up=None, same_transaction=False):
        """Record a failed attempt: in this transaction (a job's, committed right after, or
        the caller's when run inline), or through a fresh cursor otherwise."""
        connector = self.connector_id
        message = redact_text(f"{type(exc).__name__}: {exc}", connector._known_secret_values(), limit=ERROR_LIMIT)
        if gave_up:
            message = self.env._("%(error)s (gave up after %(max)s attempts)", error=message, max=gave_up)
        state = "failed" if permanent else "queued"
        job_uuid = self.env.context.get("job_uuid")
        if same_transaction:
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
                    "job_uuid": job_uuid,
                },
                same_transaction=same_transaction,
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


def _summary(env, counts):
    """A batch job's result, e.g. "98 done, 2 failed"."""
    labels = {
        "done": env._("done"),
        "ignored": env._("ignored"),
        "failed": env._("failed"),
        "retry": env._("to retry"),
        "waiting": env._("back in line"),
        "not reached": env._("not reached"),
        "settled": env._("already settled"),
        "elsewhere": env._("queued elsewhere"),
    }
    parts = [f"{counts[key]} {label}" for key, label in labels.items() if counts[key]]
    return ", ".join(parts) or env._("nothing to do")
