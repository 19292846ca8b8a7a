import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

from ...core.exceptions import IntegrationError

_logger = logging.getLogger(__name__)


class IntegrationSyncFlow(models.Model):
    """Scheduling: the cron that queues due flows, Sync, the flow's jobs and how many run at
    once, and the retention of runs."""

    _inherit = "integration.sync.flow"

    @api.model
    def _cron_sync_due(self):
        """Cron: settle runs whose job ended without them, then queue every flow whose
        interval has come (the runs do the work, in jobs)."""
        self.env["integration.sync.run"]._settle_orphans()
        now = fields.Datetime.now()
        flows = self.search(
            [
                ("is_paused", "=", False),
                ("interval_minutes", ">", 0),
                ("connector_id.active", "=", True),
                "|",
                ("next_run_at", "=", False),
                ("next_run_at", "<=", now),
            ]
        )
        for flow in flows:
            flow.next_run_at = now + timedelta(minutes=flow.interval_minutes)
            try:
                with self.env.cr.savepoint():
                    flow._sync()
            except (UserError, ValidationError, IntegrationError) as exc:
                # One flow's partner down (a remote cursor, an entities list) holds back no other flow.
                _logger.warning("Flow %s of connector %s not planned: %s", flow.code, flow.connector_id.code, exc)
        return len(flows)

    @api.model
    def _cron_cleanup_runs(self):
        """Cron: remove old runs, per flow's retention (always keeping its last success)."""
        return sum(flow._cleanup_runs() for flow in self.with_context(active_test=False).search([]))

    def _cleanup_runs(self):
        """Remove finished runs older than Keep Runs, at most Remove At Most, oldest first;
        the last successful run of the flow stays whatever its age (it says where a
        reload or an incident would restart from)."""
        self.ensure_one()
        if self.keep_days <= 0 or self.cleanup_limit <= 0:
            return 0
        Run = self.env["integration.sync.run"]
        last_success = Run.search([("flow_id", "=", self.id), ("state", "=", "done")], order="id desc", limit=1)
        old = Run.search(
            [
                ("flow_id", "=", self.id),
                ("state", "in", ("done", "partial", "failed")),
                ("create_date", "<", fields.Datetime.now() - timedelta(days=self.keep_days)),
                ("id", "!=", last_success.id),
            ],
            order="id",
            limit=self.cleanup_limit,
        )
        old.unlink()
        return len(old)

    def _sync(self):
        """Plan and queue this flow's work (windows or batches); returns the runs queued."""
        self.ensure_one()
        self.last_run_at = fields.Datetime.now()
        if self.direction == "import":
            return self._plan_import()
        return self._plan_export()

    def _delay(self, record, description, eta=None, identity_key=None):
        """``with_delay`` of a sync job of this flow (channel: the job function's, or the connector's)."""
        return record.with_delay(
            **self.connector_id._job_delay_params(),
            description=description,
            eta=eta,
            identity_key=identity_key,
            max_retries=max(self.connector_id.retry_max_attempts + 1, 10),
        )

    def _kick_queued_runs(self):
        """Queue the flow's waiting runs, as many as it may run at once.

        A run with a job is in flight, whether its job has started or not (a queued job
        takes a worker as soon as the runner has one); a run without one waits: queued
        by a Sync or a Retry, or held back by a pause (its job ended without working)."""
        self.ensure_one()
        Run = self.env["integration.sync.run"]
        limit = self.parallel_windows if self.direction == "import" else self.parallel_batches
        live = [("flow_id", "=", self.id), ("state", "in", ("queued", "running"))]
        busy = Run.search_count(live + [("job_uuid", "!=", False)])
        waiting = Run.search(live + [("job_uuid", "=", False)], order="id", limit=max(0, limit - busy))
        for run in waiting:
            run._enqueue()
        return waiting
