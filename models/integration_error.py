import hashlib
import logging
from urllib.parse import urlsplit

import psycopg2

from odoo import api, fields, models
from odoo.exceptions import UserError

_logger = logging.getLogger(__name__)

EXCERPT_LIMIT = 2000


class IntegrationError(models.Model):
    """A failure of an outbound call, grouped by fingerprint.

    Recorded through a fresh cursor (``_record``) because the transaction that failed is
    about to be rolled back. The same failure again (same connector, operation, method,
    URL path, error class and status) adds to ``count`` instead of a new row.
    """

    _name = "integration.error"
    _description = "Integration Error"
    _inherit = ["mail.thread"]
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
    error_class = fields.Char(string="Error Type")
    is_retryable = fields.Boolean(string="Retryable Failure", help="A transient failure that exhausted its attempts.")
    message = fields.Text()
    request_excerpt = fields.Text(help="Redacted and truncated.")
    response_excerpt = fields.Text(help="Redacted and truncated.")
    traceback = fields.Text()
    res_model = fields.Char(string="Related Model", index=True)
    res_id = fields.Many2oneReference(string="Related Record", model_field="res_model")
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

    @api.depends("queue_job_id.state", "state")
    def _compute_can_retry(self):
        for error in self:
            error.can_retry = bool(error.queue_job_id) and error.queue_job_id.state == "failed"

    # Actions ---------------------------------------------------------------------------

    def action_retry(self):
        """Button and bulk action: run the failed operation again (its job is re-queued)."""
        retryable = self.filtered("can_retry")
        if not retryable:
            raise UserError(
                self.env._("None of the selected errors can be retried: only failures of a failed job can be.")
            )
        for error in retryable:
            error.queue_job_id.sudo().requeue()
            error._message_log(body=self.env._("Retried by %s: the job is queued again.", self.env.user.name))
        retryable.write({"state": "resolved"})
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Retry queued"),
                "message": self.env._("%s failed operation(s) queued again.", len(retryable)),
                "type": "success",
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_resolve(self):
        self.write({"state": "resolved"})

    def action_ignore(self):
        self.write({"state": "ignored"})

    def action_reopen(self):
        self.write({"state": "new"})

    def action_open_related(self):
        self.ensure_one()
        if not (self.res_model and self.res_id):
            return False
        return {
            "type": "ir.actions.act_window",
            "res_model": self.res_model,
            "res_id": self.res_id,
            "view_mode": "form",
        }

    # Recording -------------------------------------------------------------------------

    @api.model
    def _fingerprint(self, connector, operation, method, url, error_class, status_code):
        path = urlsplit(url or "").path
        key = "|".join(str(part or "") for part in (connector.id, operation, method, path, error_class, status_code))
        return hashlib.sha256(key.encode()).hexdigest()

    @api.model
    def _record(self, connector, values):
        """Create or bump the error for ``values`` in its own transaction; returns its id.

        ``values`` are already redacted. Runs on a fresh cursor so that the record stays
        when the caller's transaction rolls back (a failed job, a button's UserError).
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
        with self.env.registry.cursor() as cr:
            env = self.env(cr=cr, su=True)
            if job_uuid:
                values["queue_job_id"] = env["queue.job"].search([("uuid", "=", job_uuid)], limit=1).id or False
            Error = env["integration.error"]
            for _attempt in range(2):
                error = Error.search([("fingerprint", "=", fingerprint)], limit=1)
                if error:
                    error.write(
                        dict(
                            values,
                            count=error.count + 1,
                            last_seen=fields.Datetime.now(),
                            state="ignored" if error.state == "ignored" else "new",
                        )
                    )
                    return error.id
                try:
                    with cr.savepoint():
                        return Error.create(dict(values, connector_id=connector.id, fingerprint=fingerprint)).id
                except psycopg2.IntegrityError:
                    continue  # created by another worker meanwhile: bump that one
        _logger.warning("Could not record integration error %s", fingerprint)
        return False
