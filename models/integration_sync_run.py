import json
import logging
from contextlib import contextmanager

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..core.exceptions import IntegrationError

_logger = logging.getLogger(__name__)

STATES = [
    ("queued", "Queued"),
    ("running", "Running"),
    ("done", "Done"),
    ("partial", "Partial"),
    ("failed", "Failed"),
]
# Errors kept on a run (the first ones, grouped): a run never holds one line per record.
ERROR_LINES = 20
ERROR_LIMIT = 8000


class IntegrationSyncRun(models.Model):
    """One window (import) or one batch (export) of a flow: its progress and outcome.

    An import window keeps a checkpoint (next page, token, counts), written in a transaction
    of its own after every page together with that page's records: a worker killed in the
    middle resumes at the next page. An export batch keeps the ids it sends, so that Retry
    sends exactly that batch again, and, for numbered messages, how far it got.
    """

    _name = "integration.sync.run"
    _description = "Sync Run (window or batch)"
    _order = "id desc"

    name = fields.Char(compute="_compute_name")
    flow_id = fields.Many2one("integration.sync.flow", required=True, ondelete="cascade", index=True)
    connector_id = fields.Many2one(related="flow_id.connector_id", store=True, index=True)
    company_id = fields.Many2one(related="flow_id.company_id", store=True, index=True)
    direction = fields.Selection(related="flow_id.direction", store=True)
    model_name = fields.Char(related="flow_id.model_name")
    kind = fields.Selection([("window", "Window"), ("batch", "Batch"), ("record", "Single record")], required=True)
    state = fields.Selection(STATES, default="queued", required=True, index=True)
    is_base_load = fields.Boolean(string="Full Reload", help="This run is part of a full reload.")

    # Import window and checkpoint
    window_start = fields.Datetime()
    window_end = fields.Datetime()
    page_next = fields.Integer(string="Next Page", default=1, help="Checkpoint: the page a resumed run asks first.")
    page_token = fields.Char(string="Next Page Token", help="Checkpoint of next-page-token paging.")
    page_count = fields.Integer(string="Pages")
    remote_total = fields.Integer(help="The window's total as the remote announced it.")

    # Export batch
    batch_ref = fields.Char(string="Batch ID", help="The batch id sent to the remote (messages protocol).")
    plan_ref = fields.Char(help="The Sync that planned this batch; the cursor moves when all its batches succeed.")
    plan_until = fields.Datetime(help="Changes up to this time are in the plan of this batch.")
    res_ids_json = fields.Text(string="Record IDs", help="The Odoo ids of the batch (Retry sends exactly these).")
    deleted_ids_json = fields.Text(string="Deleted IDs", help="External ids of tombstones in the batch.")
    remote_job_id = fields.Char(string="Remote Job ID")
    poll_count = fields.Integer(string="Polls")
    message_count = fields.Integer(string="Messages")
    sent_digests_json = fields.Text(help="Digest of each document sent, bound to its record once the remote took it.")
    records_sent = fields.Integer(help="Messages protocol: records acknowledged so far (a retry resumes here).")

    # Counts
    fetched_count = fields.Integer(string="Fetched")
    created_count = fields.Integer(string="Created")
    updated_count = fields.Integer(string="Updated")
    unchanged_count = fields.Integer(string="Unchanged")
    deleted_count = fields.Integer(string="Deleted")
    failed_count = fields.Integer(string="Failed")
    sent_count = fields.Integer(string="Sent")

    started_at = fields.Datetime()
    finished_at = fields.Datetime()
    duration = fields.Float(string="Duration (s)", compute="_compute_duration", store=True, aggregator="avg")
    error = fields.Text()
    job_uuid = fields.Char(string="Job", index=True, copy=False)

    @api.depends("kind", "window_start", "window_end", "batch_ref", "flow_id.name")
    def _compute_name(self):
        for run in self:
            if run.kind == "window" and run.window_start:
                what = f"{run.window_start:%Y-%m-%d %H:%M:%S} → {run.window_end:%H:%M:%S}"
            elif run.kind == "batch":
                what = self.env._("batch %s", run.batch_ref or run.id)
            else:
                what = self.env._("single record")
            run.name = f"{run.flow_id.name}: {what}"

    @api.depends("started_at", "finished_at")
    def _compute_duration(self):
        for run in self:
            if run.started_at and run.finished_at:
                run.duration = (run.finished_at - run.started_at).total_seconds()
            else:
                run.duration = 0.0

    # Retry (the error log's Retry reaches here too) ----------------------------------------

    def _integration_can_retry(self):
        self.ensure_one()
        return self.state in ("failed", "partial")

    def _integration_retry(self):
        self.action_retry()

    def action_retry(self):
        """Button: run exactly this window or batch again."""
        runs = self.filtered(lambda r: r.state in ("failed", "partial"))
        if not runs:
            raise UserError(self.env._("Only failed or partial runs can be retried."))
        runs.check_access("read")
        for run in runs.sudo():
            run.write(
                {
                    "state": "queued",
                    "error": False,
                    "page_next": 1,
                    "page_token": False,
                    "job_uuid": False,
                    "remote_job_id": False,
                    "poll_count": 0,
                    "failed_count": 0,
                }
            )
            run._enqueue()
        return True

    # Jobs --------------------------------------------------------------------------------

    def _enqueue(self):
        self.ensure_one()
        flow = self.flow_id
        job = flow._delay(self, self.env._("%(flow)s: %(run)s", flow=flow.name, run=self.name))._job_run()
        self.job_uuid = job.uuid
        return job

    def _job_run(self):
        """Queue job entry point: work on this window or batch (resumable)."""
        self.ensure_one()
        if self.state in ("done", "partial", "failed") and not self.remote_job_id:
            return self.env._("Nothing to do: the run is %s.", self.state)
        flow = self.flow_id.with_context(integration_related_model=self._name, integration_related_id=self.id)
        if flow.is_paused and not self.remote_job_id:
            # Nothing new goes out while paused (a sent batch's remote job is still followed
            # up). The run waits without a job, from its checkpoint: Resume queues it again.
            self.write({"state": "queued", "job_uuid": False})
            return self.env._("Flow paused: the run waits for Resume.")
        if self.kind == "window":
            return flow._import_window(self)
        return flow._export_batch(self)

    # Checkpoints in transactions of their own ---------------------------------------------

    @contextmanager
    def _own_transaction(self):
        """``self`` in a transaction of its own, committed when the block ends (rolled back on
        an error): a page's records and its checkpoint are kept or lost together."""
        with self.env.registry.cursor() as cr:
            yield self.with_env(self.env(cr=cr))

    def _checkpoint(self, **values):
        """Write ``values`` on the run at once, in a transaction of its own."""
        with self._own_transaction() as run:
            run.write(values)

    def _add_errors(self, messages):
        """Grouped error text: each distinct message once with how often it occurred."""
        self.ensure_one()
        grouped = {}
        for message in messages:
            grouped[message] = grouped.get(message, 0) + 1
        lines = [f"{count} × {message}" if count > 1 else message for message, count in grouped.items()]
        more = len(lines) - ERROR_LINES
        text = "\n".join(lines[:ERROR_LINES]) + (self.env._("\n… and %s more", more) if more > 0 else "")
        return ((self.error or "") + ("\n" if self.error else "") + text)[:ERROR_LIMIT]

    def _fail(self, exc):
        """The run failed for good: its state and error, in a transaction of its own (the
        job's rolls back), and in the error log unless the call path logged it already."""
        self.ensure_one()
        message = str(exc)[:ERROR_LIMIT]
        with self._own_transaction() as run:
            run.write({"state": "failed", "error": message, "finished_at": fields.Datetime.now()})
            if not isinstance(exc, IntegrationError):
                run.env["integration.error"]._record(
                    run.connector_id,
                    {
                        "operation": f"{run.flow_id.code}: {run.name}",
                        "error_class": type(exc).__name__,
                        "is_retryable": True,
                        "message": message,
                        "res_model": run._name,
                        "res_id": run.id,
                    },
                    same_transaction=True,
                )
        _logger.warning("Sync run %s of flow %s failed: %s", self.id, self.flow_id.code, message[:300])

    def _res_ids(self):
        return json.loads(self.res_ids_json or "[]")

    def _deleted_ids(self):
        return json.loads(self.deleted_ids_json or "[]")
