import json
import logging
from contextlib import contextmanager

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..core import transport
from ..core.exceptions import IntegrationError

_logger = logging.getLogger(__name__)

# What a window run counts, reset when it is read again (Retry, a split, a restart).
WINDOW_COUNTS = (
    "fetched_count",
    "created_count",
    "updated_count",
    "unchanged_count",
    "deleted_count",
    "failed_count",
    "page_count",
    "remote_total",
    "restart_count",
)
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
    restart_count = fields.Integer(
        string="Restarts", help="Times the window was read again from its first page because its total changed."
    )

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
    records_sent = fields.Integer(
        help="Messages protocol: how far into the batch the acknowledged messages reach (a retry resumes there)."
    )

    # Counts
    fetched_count = fields.Integer(string="Fetched")
    created_count = fields.Integer(string="Created")
    updated_count = fields.Integer(string="Updated")
    unchanged_count = fields.Integer(string="Unchanged")
    deleted_count = fields.Integer(string="Deleted")
    failed_count = fields.Integer(string="Failed")
    sent_count = fields.Integer(string="Sent")

    progress = fields.Float(
        compute="_compute_progress",
        help="Import: records read out of the total the remote announced. Export: records the remote "
        "acknowledged out of the batch (messages), or the batch once settled.",
    )
    started_at = fields.Datetime()
    # Indexed: the health check reads the runs finished since its previous pass (alerts).
    finished_at = fields.Datetime(index=True)
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

    @api.depends(
        "state", "fetched_count", "remote_total", "records_sent", "sent_count", "res_ids_json", "deleted_ids_json"
    )
    def _compute_progress(self):
        for run in self:
            if run.state in ("done", "partial"):
                run.progress = 100.0
            elif run.kind == "window":
                run.progress = min(100.0, 100.0 * run.fetched_count / run.remote_total) if run.remote_total else 0.0
            else:
                size = len(run._res_ids()) + len(run._deleted_ids())
                done = max(run.records_sent, run.sent_count)  # acknowledged messages, or a batch sent
                run.progress = min(100.0, 100.0 * done / size) if size else 0.0

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
        # Superseded: the errors of these runs are resolved and their failed jobs cancelled,
        # so that no Retry elsewhere (the error log) queues a second job for the same run.
        self.env["integration.error"].sudo().search(
            [("res_model", "=", self._name), ("res_id", "in", runs.ids), ("state", "=", "new")]
        ).write({"state": "resolved"})
        failed_jobs = (
            self.env["queue.job"]
            .sudo()
            .search([("uuid", "in", [uuid for uuid in runs.mapped("job_uuid") if uuid]), ("state", "=", "failed")])
        )
        for job in failed_jobs:
            job.button_cancelled()
        for run in runs.sudo():
            # A window is read again from its first page: its counts start again too (they
            # decide nothing, but a total "fetched" must not stop the paging early).
            counts = dict.fromkeys(WINDOW_COUNTS, 0) if run.kind == "window" else {}
            run.write(
                {
                    **counts,
                    "state": "queued",
                    "error": False,
                    "page_next": 1,
                    "page_token": False,
                    "job_uuid": False,
                    "remote_job_id": False,
                    "poll_count": 0,
                    "failed_count": 0,
                    # Its own time: a batch retried hours later is not "polled too long" at once.
                    "started_at": False,
                    "finished_at": False,
                }
            )
            run._enqueue()
        return True

    # Jobs --------------------------------------------------------------------------------

    def _enqueue(self):
        self.ensure_one()
        flow = self.flow_id
        # The run's bookkeeping needs rights operators and managers lack (creating the second
        # half of a split window, bindings): its job runs as superuser, and the records of
        # the flow's model are read and written as the flow's Run As user (``_model``).
        job = flow._delay(
            self.sudo(), self.env._("%(connector)s: %(run)s", connector=flow.connector_id.name, run=self.name)
        )._job_run()
        self.job_uuid = job.uuid
        return job

    def _job_run(self):
        """Queue job entry point: ``_run`` within the flow's job time limit (a window cut short
        resumes at its next page when the job is retried)."""
        self.ensure_one()
        with transport.time_limit(self.flow_id._job_time_limit()):
            return self._run()

    def _run(self):
        """Work on this window or batch (resumable)."""
        self.ensure_one()
        if self.state in ("done", "partial", "failed"):
            if self.kind == "window":
                # Killed between its last page and the cursor's move: move it now.
                self.flow_id._after_window(self)
            return self.env._("Nothing to do: the run is %s.", self.state)
        # Errors of its calls are linked to the run (its Retry is theirs).
        run = self.with_context(integration_related_model=self._name, integration_related_id=self.id)
        flow = run.flow_id
        if flow.is_paused and not self.remote_job_id:
            # Nothing new goes out while paused (a sent batch's remote job is still followed
            # up). The run waits without a job, from its checkpoint: Resume queues it again.
            self.write({"state": "queued", "job_uuid": False})
            return self.env._("Flow paused: the run waits for Resume.")
        if run.kind == "window":
            return flow._import_window(run)
        return flow._export_batch(run)

    @api.model
    def _settle_orphans(self):
        """Runs left queued or running by a job that ended without them (failed outside the
        run's own handling, cancelled or deleted in Job Queue) fail with that reason, so
        that they hold no Sync back and show a Retry. A job still waiting or started is
        left alone: queue_job requeues the jobs of a killed worker, which resume the run."""
        runs = self.sudo().search([("state", "in", ("queued", "running")), ("job_uuid", "!=", False)])
        if not runs:
            return self.browse()
        jobs = {job.uuid: job for job in self.env["queue.job"].sudo().search([("uuid", "in", runs.mapped("job_uuid"))])}
        orphans = self.browse()
        for run in runs:
            job = jobs.get(run.job_uuid)
            if job and job.state not in ("failed", "cancelled", "done"):
                continue
            reason = (
                self.env._(
                    "Its job %(uuid)s is %(state)s: %(result)s",
                    uuid=run.job_uuid,
                    state=job.state,
                    result=(job.exc_message or job.result or "")[:500],
                )
                if job
                else self.env._("Its job %s no longer exists.", run.job_uuid)
            )
            run.write({"state": "failed", "error": reason, "finished_at": fields.Datetime.now()})
            orphans |= run
        for flow in orphans.flow_id:
            flow._kick_queued_runs()
        if orphans:
            _logger.warning("Sync runs %s failed: their jobs ended without them", orphans.ids)
        return orphans

    # Checkpoints in transactions of their own ---------------------------------------------

    @contextmanager
    def _own_transaction(self):
        """``self`` in a transaction of its own, committed when the block ends (rolled back on
        an error): a page's records and its checkpoint are kept or lost together."""
        # What this transaction holds goes to the database first (in tests the two share a
        # connection; in production it is a no-op for the other transaction).
        self.env.flush_all()
        with self.env.registry.cursor() as cr:
            yield self.with_env(self.env(cr=cr))
        # What the other transaction wrote is read again, not served from this one's cache.
        self.env.invalidate_all()

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

    def _position(self):
        """Where an import window stands (read in the checkpoint's transaction)."""
        self.ensure_one()
        return {
            "name": self.name,
            "page": self.page_next,
            "token": self.page_token or None,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "fetched": self.fetched_count,
        }

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
