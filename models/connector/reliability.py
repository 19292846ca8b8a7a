import math
from datetime import datetime, timezone

from odoo import fields, models

from odoo.addons.queue_job.exception import RetryableJobError

from ...core import backoff
from ...core.exceptions import IntegrationHTTPError, IntegrationRefusedError
from ..integration_connector_state import state_cursor

# Fraction of the configured rate the limiter paces at (see _rate_per_second). A call that
# is sent late (its process woke late from the wait for its slot) does not move the slots of
# the calls after it, so it may arrive closer to the next one than the interval: pacing at
# 95 % absorbs lateness up to 5 % of any window (50 ms of a one-second window) before the
# partner could count one call too many in it. (At 99 %, 10 ms of lateness on this loaded
# 2-core machine showed 21 calls in one second at 20 per second.)
RATE_PACING = 0.95


def _epoch_to_datetime(value):
    if not value:
        return False
    return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)


def _error_details(error):
    """Keyword arguments that rebuild ``error`` with another message."""
    if isinstance(error, IntegrationHTTPError):
        return {
            "status_code": error.status_code,
            "method": error.method,
            "url": error.url,
            "remote_message": error.remote_message,
            "retry_after": error.retry_after,
        }
    return {}


class IntegrationConnector(models.Model):
    """Reliability: the shared rate limit, the retry policy of jobs, the circuit breaker.

    The breaker and rate-limit state live in ``integration.connector.state`` (read and
    written on autocommit connections, shared by every worker and server);
    ``_handle_failure`` turns a failed call into a job retry or a logged error.
    """

    _inherit = "integration.connector"

    # Rate limit, shared by every worker and server on the database
    # Rate limit, shared by every worker and server on the database
    rate_limit = fields.Integer(
        default=0,
        help="Most calls per period sent to this API (0: no limit). Shared by all Odoo workers.",
    )
    rate_limit_period = fields.Selection(
        [("second", "per second"), ("minute", "per minute")], default="minute", required=True
    )
    rate_limit_burst = fields.Integer(
        string="Burst", default=1, help="Calls that may go back to back when the budget is full."
    )
    rate_limit_max_wait = fields.Float(
        string="Max Wait (s)",
        default=2.0,
        help="A call waits at most this long for its turn; beyond it a job is rescheduled and a "
        "button says when to try again.",
    )

    # Retry policy for jobs
    # Retry policy for jobs
    retry_max_attempts = fields.Integer(string="Max Attempts", default=5)
    retry_backoff_base = fields.Float(string="Backoff Base (s)", default=2.0)
    retry_backoff_cap = fields.Float(string="Backoff Cap (s)", default=300.0)
    job_time_limit = fields.Integer(
        string="Job Time Limit (s)",
        help="The longest one of this connector's jobs (a queued call, a webhook event, a probe) may "
        "run: a call would end past it is cut short (or not sent) and the job retries as after a "
        "timeout. 0: four times the connect and read timeouts, at least 60 s.",
    )

    # Circuit breaker
    # Circuit breaker
    circuit_threshold = fields.Integer(
        string="Open After Failures",
        default=5,
        help="Consecutive retryable failures that open the circuit (0: no circuit breaker).",
    )
    circuit_reset_timeout = fields.Float(
        string="Reset Timeout (s)", default=60.0, help="How long the circuit stays open before one probe call."
    )
    circuit_state = fields.Selection(
        [("closed", "Closed"), ("open", "Open"), ("half_open", "Half-open")],
        compute="_compute_runtime_state",
    )
    circuit_failures = fields.Integer(string="Consecutive Failures", compute="_compute_runtime_state")
    circuit_opened_at = fields.Datetime(string="Opened At", compute="_compute_runtime_state")
    circuit_last_failure_at = fields.Datetime(string="Last Failure", compute="_compute_runtime_state")
    circuit_last_error = fields.Char(string="Last Failure Reason", compute="_compute_runtime_state")

    # Job routing
    job_channel_id = fields.Many2one(
        "queue.job.channel",
        help="Run this connector's jobs (queued calls, webhook events) on this channel. Empty: each "
        "job function's own channel (Job Queue > Job Functions), root.integration.* by default.",
    )

    _sql_constraints = [
        ("rate_limit_positive", "CHECK(rate_limit >= 0)", "The rate limit cannot be negative."),
        ("rate_limit_burst_positive", "CHECK(rate_limit_burst >= 1)", "The burst must be at least 1."),
        ("retry_max_attempts_positive", "CHECK(retry_max_attempts >= 1)", "At least one attempt is needed."),
        ("circuit_threshold_positive", "CHECK(circuit_threshold >= 0)", "The failure threshold cannot be negative."),
    ]

    def _compute_runtime_state(self):
        # Read live from the shared-state connection: the state is not transactional, and a
        # long transaction must not show a breaker as it was when that transaction began.
        states = {}
        if self.ids:
            with state_cursor(self.env.cr.dbname) as cr:
                cr.execute(
                    """SELECT connector_id, circuit_state, circuit_failures, circuit_opened_at,
                              circuit_last_failure_at, circuit_last_error
                         FROM integration_connector_state WHERE connector_id IN %s""",
                    [tuple(self.ids)],
                )
                states = {row[0]: row[1:] for row in cr.fetchall()}
        for connector in self:
            state, failures, opened_at, last_failure_at, last_error = states.get(
                connector.id, ("closed", 0, None, None, None)
            )
            connector.circuit_state = state
            connector.circuit_failures = failures
            connector.circuit_opened_at = _epoch_to_datetime(opened_at)
            connector.circuit_last_failure_at = _epoch_to_datetime(last_failure_at)
            connector.circuit_last_error = last_error or False

    def action_reset_circuit(self):
        """Button: close the circuit and lift any Retry-After block now."""
        self.check_access("write")
        with state_cursor(self.env.cr.dbname) as cr:
            for connector in self:
                self.env["integration.connector.state"]._reset(cr, connector.id)
                connector._message_log(body=self.env._("Circuit breaker reset by %s.", self.env.user.name))
        return True

    def _rate_per_second(self):
        """The pace of the shared limiter: a hair under the configured rate, so that network
        jitter (a call delayed, the next one on time) never shows the partner more calls in
        a window than it allows."""
        if not self.rate_limit:
            return 0.0
        return RATE_PACING * self.rate_limit / (60.0 if self.rate_limit_period == "minute" else 1.0)

    def _job_delay_params(self):
        """``with_delay`` arguments of this connector's jobs: a channel only when the
        connector names one, so that otherwise the job function's channel (data that
        integrators may change) routes the job."""
        return {"channel": self.sudo().job_channel_id.complete_name} if self.sudo().job_channel_id else {}

    def _job_max_attempts(self, job):
        """Attempts a job of this connector gets: the connector's, or the job's own limit if
        lower (jobs enqueued by other code keep queue_job's default)."""
        return min(self.retry_max_attempts, job.max_retries or self.retry_max_attempts)

    def _handle_failure(self, error, method, url, operation, related, log_errors, kwargs=None):
        """What a failed call raises: a job retry, or the typed error (recorded in the log)."""
        job_uuid = self.env.context.get("job_uuid")
        if isinstance(error, IntegrationRefusedError):
            # Nothing was sent: wait for the breaker or the budget without spending an attempt.
            if job_uuid:
                return RetryableJobError(str(error), seconds=max(1, math.ceil(error.retry_in)), ignore_retry=True)
            return error
        exhausted = False
        if job_uuid and error.retryable:
            job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1)
            attempt = job.retry
            max_attempts = self._job_max_attempts(job)
            if attempt + 1 < max_attempts:
                delay = backoff.retry_delay(
                    attempt,
                    self.retry_backoff_base,
                    self.retry_backoff_cap,
                    retry_after=getattr(error, "retry_after", None),
                    rng=backoff.jitter_random,
                )
                return RetryableJobError(
                    self.env._(
                        "%(error)s (attempt %(attempt)s of %(max)s, next in %(delay).0f s)",
                        error=error,
                        attempt=attempt + 1,
                        max=max_attempts,
                        delay=delay,
                    ),
                    seconds=max(1, math.ceil(delay)),
                )
            exhausted = True
            error = type(error)(
                self.env._("%(error)s (gave up after %(max)s attempts)", error=error, max=max_attempts),
                **_error_details(error),
            )
        if log_errors and (exhausted or not error.retryable or not job_uuid):
            self._log_error(error, method, url, operation, related, job_uuid, kwargs)
        return error
