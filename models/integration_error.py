import hashlib
import logging
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors

from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError

from ..const import MANAGER_GROUP
from ..core.actions import notification

_logger = logging.getLogger(__name__)

EXCERPT_LIMIT = 2000
# Columns an error takes from the latest failure of its group.
_COPIED_COLUMNS = (
    "operation",
    "method",
    "url",
    "status_code",
    "error_class",
    "message",
    "request_excerpt",
    "response_excerpt",
    "traceback",
    "res_model",
    "res_id",
)


class IntegrationFailureLog(models.Model):
    """A failure of an outbound call or of processing, grouped by fingerprint.

    Recorded through a fresh cursor (``_record``) because the transaction that failed is
    about to be rolled back. The same failure again (same connector, operation, method,
    URL path, error class and status) adds to ``count`` instead of a new row.

    **Retry** does not know what failed: it asks the related record, then the failed job,
    to retry itself. A model whose records can be retried from here implements two
    methods (webhook events and ``queue.job`` do; sync runs will):

    - ``_integration_can_retry()``: True when a Retry would run the failed work again;
    - ``_integration_retry()``: queue that work again (the record's own Retry).
    """

    _name = "integration.error"
    _description = "Integration Error"
    _inherit = ["mail.thread", "integration.related.mixin"]
    _order = "last_seen desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True, index=True)
    state = fields.Selection(
        [("new", "New"), ("resolved", "Resolved"), ("ignored", "Ignored")],
        default="new",
        required=True,
        tracking=True,
        index=True,
    )
    operation = fields.Char(help="What was being done, e.g. 'Push orders' or 'GET /orders'.")
    method = fields.Char()
    url = fields.Char(string="URL", help="Secrets redacted.")
    status_code = fields.Integer(string="HTTP Status")
    error_class = fields.Char(
        string="Error Type", help="The kind of failure, e.g. IntegrationHTTPError or IntegrationConnectionError."
    )
    is_retryable = fields.Boolean(string="Retryable Failure", help="A transient failure that exhausted its attempts.")
    message = fields.Text()
    request_excerpt = fields.Text(help="Redacted and truncated.")
    response_excerpt = fields.Text(help="Redacted and truncated.")
    traceback = fields.Text()
    queue_job_id = fields.Many2one("queue.job", string="Job", ondelete="set null", index=True)
    job_state = fields.Selection(related="queue_job_id.state", string="Job State")
    fingerprint = fields.Char(required=True, index=True, readonly=True)
    count = fields.Integer(default=1, readonly=True, aggregator="sum")
    first_seen = fields.Datetime(default=fields.Datetime.now, readonly=True)
    last_seen = fields.Datetime(default=fields.Datetime.now, readonly=True, index=True)
    can_retry = fields.Boolean(compute="_compute_can_retry", compute_sudo=True)

    _sql_constraints = [("fingerprint_uniq", "unique(fingerprint)", "One error record per fingerprint.")]

    @api.depends("connector_id.name", "operation", "status_code", "error_class")
    def _compute_name(self):
        for error in self:
            what = f"HTTP {error.status_code}" if error.status_code else (error.error_class or "")
            error.name = f"{error.connector_id.name or ''}: {error.operation or ''} ({what})"

    @api.depends("queue_job_id.state", "state", "res_model", "res_id")
    def _compute_can_retry(self):
        for error in self:
            error.can_retry = bool(error._retry_target())

    def _retry_target(self):
        """What Retry re-runs: the related record when it can retry itself (a failed webhook
        event: a new job for it), else the failed job; None when nothing can be retried."""
        self.ensure_one()
        related = None
        if self.res_model in self.env and self.res_id:
            related = self.env[self.res_model].sudo().browse(self.res_id).exists()
        for target in (related, self.queue_job_id.sudo()):
            if target and hasattr(target, "_integration_can_retry") and target._integration_can_retry():
                return target
        return None

    def write(self, vals):
        # Operators triage errors (resolve, ignore, reopen, retry): they change the state,
        # never what an error points at, which Retry acts upon as superuser.
        if set(vals) - {"state"} and not self.env.su and not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Integration users may only change the state of an error."))
        return super().write(vals)

    # Actions ---------------------------------------------------------------------------

    def action_retry(self):
        """Button and bulk action: run the failed operation again (its job is re-queued)."""
        retryable = self.filtered("can_retry")
        if not retryable:
            raise UserError(
                self.env._("None of the selected errors can be retried: only failures of a failed job can be.")
            )
        for error in retryable:
            # As the user who pressed Retry: the target checks what they may retry.
            error._retry_target().with_env(self.env)._integration_retry()
            error._message_log(body=self.env._("Retried by %s: the job is queued again.", self.env.user.name))
        retryable.write({"state": "resolved"})
        return notification(
            self.env._("Retry queued"), self.env._("%s failed operation(s) queued again.", len(retryable))
        )

    def action_resolve(self):
        self.write({"state": "resolved"})

    def action_ignore(self):
        self.write({"state": "ignored"})

    def action_reopen(self):
        self.write({"state": "new"})

    # Recording -------------------------------------------------------------------------

    @contextmanager
    def _error_cursor(self, same_transaction):
        if not same_transaction:
            with self.env.registry.cursor() as cr:
                yield cr
            return
        self.flush_model()
        with self.env.cr.savepoint(flush=False):
            yield self.env.cr
        self.invalidate_model()

    @api.model
    def _fingerprint(self, connector, operation, method, url, error_class, status_code):
        path = urlsplit(url or "").path
        key = "|".join(str(part or "") for part in (connector.id, operation, method, path, error_class, status_code))
        return hashlib.sha256(key.encode()).hexdigest()

    @api.model
    def _record(self, connector, values, same_transaction=False):
        """Create or bump the error for ``values`` in its own transaction; returns its id.

        ``values`` are already redacted. Runs on a fresh cursor so that the record stays
        when the caller's transaction rolls back (a failed job, a button's UserError);
        with ``same_transaction``, in the caller's (which must then commit, and may hold
        rows a fresh cursor would wait for).
        """
        values = dict(values)
        for key in ("request_excerpt", "response_excerpt", "traceback", "message"):
            if values.get(key) and len(values[key]) > EXCERPT_LIMIT * 4:
                values[key] = values[key][: EXCERPT_LIMIT * 4]
        fingerprint = self._fingerprint(
            connector,
            values.get("operation"),
            values.get("method"),
            values.get("url"),
            values.get("error_class"),
            values.get("status_code"),
        )
        job_uuid = values.pop("job_uuid", None)
        what = f"HTTP {values['status_code']}" if values.get("status_code") else (values.get("error_class") or "")
        row = dict(
            {key: values.get(key) or None for key in _COPIED_COLUMNS},
            connector_id=connector.id,
            company_id=connector.company_id.id,
            fingerprint=fingerprint,
            name=f"{connector.name}: {values.get('operation') or ''} ({what})",
            is_retryable=bool(values.get("is_retryable")),
            uid=self.env.uid,
        )
        # One statement, on a fresh cursor: concurrent failures of the same kind bump one
        # row instead of racing to create two; a serialization failure is tried again.
        for attempt in range(3):
            try:
                with self._error_cursor(same_transaction) as cr:
                    if job_uuid:
                        cr.execute("SELECT id FROM queue_job WHERE uuid = %s", [job_uuid])
                        found = cr.fetchone()
                        row["queue_job_id"] = found[0] if found else None
                    else:
                        row["queue_job_id"] = None
                    columns = [*_COPIED_COLUMNS, "queue_job_id"]
                    cr.execute(
                        f"""
                        INSERT INTO integration_error AS e (
                            connector_id, company_id, fingerprint, name, is_retryable, {", ".join(columns)},
                            state, count, first_seen, last_seen, create_uid, write_uid, create_date, write_date)
                        VALUES (%(connector_id)s, %(company_id)s, %(fingerprint)s, %(name)s, %(is_retryable)s,
                                {", ".join(f"%({c})s" for c in columns)},
                                'new', 1, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',
                                %(uid)s, %(uid)s, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
                        ON CONFLICT (fingerprint) DO UPDATE SET
                            count = e.count + 1,
                            last_seen = EXCLUDED.last_seen,
                            write_date = EXCLUDED.write_date,
                            write_uid = EXCLUDED.write_uid,
                            state = CASE WHEN e.state = 'ignored' THEN 'ignored' ELSE 'new' END,
                            name = EXCLUDED.name,
                            is_retryable = EXCLUDED.is_retryable,
                            {", ".join(f"{c} = EXCLUDED.{c}" for c in columns)}
                        RETURNING id
                        """,  # noqa: S608 - column names are this module's constants
                        row,
                    )
                    return cr.fetchone()[0]
            except psycopg2.errors.SerializationFailure:
                if attempt == 2:
                    raise
            except psycopg2.errors.ForeignKeyViolation:
                # The connector is not committed yet (created in the failing transaction):
                # there is nothing durable to attach the error to.
                _logger.warning("Integration error not recorded: connector %s is not committed", connector.id)
                return False
        return False
