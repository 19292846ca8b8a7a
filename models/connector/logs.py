import logging
import os

from odoo import fields, models
from odoo.tools import config

from ...const import (
    CALL_LOGGER,
    LOG_FORMAT_CONFIG_OPTION,
    LOG_FORMAT_ENV_VARIABLE,
    SENTRY_DSN_CONFIG_OPTION,
    SENTRY_DSN_ENV_VARIABLE,
)
from ...core import sentry
from ...core.calllog import call_fields, call_level, format_call_line, parse_format
from ...core.exceptions import IntegrationRefusedError
from ...core.redact import redact_text, redact_url

_call_logger = logging.getLogger(CALL_LOGGER)

# Failures that a job retries while it has attempts left (the others are final at once).
_RETRIED_OUTCOMES = ("retryable_error", "connection_error")


def call_log_format():
    """The configured form of the call lines: "json" or "text" (the environment wins)."""
    return parse_format(os.environ.get(LOG_FORMAT_ENV_VARIABLE) or config.get(LOG_FORMAT_CONFIG_OPTION))


def sentry_dsn():
    """The configured Sentry DSN of the addon, or "" (the environment wins)."""
    return (os.environ.get(SENTRY_DSN_ENV_VARIABLE) or config.get(SENTRY_DSN_CONFIG_OPTION) or "").strip()


class IntegrationConnector(models.Model):
    """Logs and error tracking: one line per call, terminal failures to Sentry.

    ``_log_call`` writes the line of an exchange (``_account_call`` calls it): a success
    only while the connector's debug switch is on (INFO), a failure always (WARNING, or
    ERROR when nothing will retry it). A call refused before it was sent (circuit open,
    rate limit) is a failure line too, outcome "refused": a job that keeps being
    rescheduled shows why. ``_log_error`` (terminal failures) also goes to Sentry when
    configured (see ``core/sentry.py``).
    """

    _inherit = "integration.connector"

    def _log_call(self, method, url, response, error, latency_ms, outcome, operation=None, health_probe=False):
        """The log line of one exchange: fields redacted (URL masked, no headers, no bodies).
        A failed health probe is a WARNING: it is an observation, and the probe history,
        the status and the alerts tell what it means."""
        if outcome == "ok" and not (_call_logger.isEnabledFor(logging.INFO) and self._is_debugging_calls()):
            return
        job_uuid = self.env.context.get("job_uuid")
        attempt, max_attempts = self._job_attempts(job_uuid) if job_uuid else (None, None)
        # Final: a transient failure outside a job (raised to the caller) or on the job's
        # last attempt. A 4xx answer or a refusal is left to the caller's judgement
        # (WARNING); when it ends the call for good, the error log and Sentry have it.
        final = (
            outcome in _RETRIED_OUTCOMES
            and not health_probe
            and (not job_uuid or not attempt or attempt >= max_attempts)
        )
        level = call_level(outcome, final)
        if not _call_logger.isEnabledFor(level):
            return
        prepared_url = response.request.url if response is not None and response.request is not None else url
        self._write_call_line(
            level,
            method=method,
            url=prepared_url,
            status=response.status_code if response is not None else None,
            duration_ms=latency_ms,
            job_uuid=job_uuid,
            attempt=attempt,
            outcome=outcome,
            error=type(error).__name__ if error is not None else None,
            operation=operation,
        )

    def _write_call_line(self, level, *, url, operation, **values):
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        line = call_fields(
            level,
            connector=self.code,
            operation=redact_text(operation, secrets) if operation else None,
            url=redact_text(redact_url(url, names), secrets) if url else None,
            **values,
        )
        _call_logger.log(level, "%s", format_call_line(line, call_log_format()))

    def _is_debugging_calls(self):
        return bool(self.debug_until and self.debug_until > fields.Datetime.now())

    def _job_attempts(self, job_uuid):
        """(attempt, max attempts) of the running job, the attempt counted from 1 as the
        retry messages count it (queue_job stores the tries before this one).

        One indexed read, only when a line is written (a failure, or a success while
        debugging): the quiet success path never pays it.
        """
        job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1)
        if not job:
            return None, None
        return job.retry + 1, self._job_max_attempts(job)

    def _handle_failure(self, error, method, url, operation, related, log_errors, kwargs=None):
        """A call refused before anything was sent has no exchange to account: its line is written here."""
        if isinstance(error, IntegrationRefusedError):
            job_uuid = self.env.context.get("job_uuid")
            self._write_call_line(
                call_level("refused", final=False),
                method=method,
                url=url,
                status=None,
                duration_ms=0,
                job_uuid=job_uuid,
                attempt=self._job_attempts(job_uuid)[0] if job_uuid else None,
                outcome="refused",
                error=type(error).__name__,
                operation=operation,
            )
        return super()._handle_failure(error, method, url, operation, related, log_errors, kwargs)

    def _log_error(self, error, method, url, operation, related, job_uuid, kwargs):
        """Terminal failures go to Sentry too, when configured."""
        result = super()._log_error(error, method, url, operation, related, job_uuid, kwargs)
        self._track_error(error, method, url, operation, job_uuid)
        return result

    def _track_error(self, error, method, url, operation, job_uuid):
        """Capture one terminal failure in Sentry, through the same redaction as the error log."""
        client = sentry.client_for(sentry_dsn())
        if client is None:
            return None
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        safe_operation = redact_text(operation, secrets) if operation else ""
        return sentry.capture_failure(
            client,
            message=f"{self.code}: {safe_operation}: {redact_text(str(error), secrets)}",
            error_type=type(error).__name__,
            tags={"connector": self.code, "operation": safe_operation, "job_uuid": job_uuid},
            extra={
                "method": method,
                "url": redact_text(redact_url(url, names), secrets) if url else None,
                "status": getattr(error, "status_code", None),
                "retryable": error.retryable,
            },
            # One issue per connector, operation and kind of failure, whatever the message.
            fingerprint=["integration_hub", self.code, safe_operation, type(error).__name__],
            secrets=secrets,
            names=names,
        )
