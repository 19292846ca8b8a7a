from datetime import timedelta

from odoo import fields, models
from odoo.exceptions import UserError

from ...core.actions import notification
from ..integration_sync_run import STATES as RUN_STATES

# The webhook backlog's drain rate is measured over this many minutes of processed events.
DRAIN_WINDOW_MINUTES = 10


class IntegrationConnector(models.Model):
    """The operator's Overview: figures of the dashboard cards that no other chapter has
    (how fast the webhook backlog drains, the last sync and a running one's progress) and
    the card buttons (Sync Now, Open Failed, Retry Failed)."""

    _inherit = "integration.connector"

    webhook_drain_per_min = fields.Float(
        string="Drain Rate (events/min)",
        compute="_compute_webhook_drain",
        digits=(16, 1),
        help=f"Events processed per minute over the last {DRAIN_WINDOW_MINUTES} minutes.",
    )
    webhook_empty_eta = fields.Char(string="Backlog Empty", compute="_compute_webhook_drain")
    sync_last_state = fields.Selection(RUN_STATES, string="Last Sync", compute="_compute_sync_overview")
    sync_last_at = fields.Datetime(string="Last Sync At", compute="_compute_sync_overview")
    sync_running_count = fields.Integer(string="Running Sync Runs", compute="_compute_sync_overview")
    sync_running_progress = fields.Float(string="Sync Progress", compute="_compute_sync_overview")

    def _compute_webhook_drain(self):
        since = fields.Datetime.now() - timedelta(minutes=DRAIN_WINDOW_MINUTES)
        processed = dict(
            self.env["integration.webhook.event"]._read_group(
                [("connector_id", "in", self.ids), ("processed_at", ">=", since)], ["connector_id"], ["__count"]
            )
        )
        for connector in self:
            rate = processed.get(connector, 0) / DRAIN_WINDOW_MINUTES
            connector.webhook_drain_per_min = rate
            waiting = connector.webhook_queued_count
            if not waiting:
                connector.webhook_empty_eta = self.env._("empty")
            elif not rate:
                connector.webhook_empty_eta = self.env._("not draining")
            else:
                minutes = waiting / rate
                connector.webhook_empty_eta = (
                    self.env._("in about %s min", max(1, round(minutes)))
                    if minutes < 120
                    else self.env._("in about %s h", round(minutes / 60, 1))
                )

    def _compute_sync_overview(self):
        Run = self.env["integration.sync.run"]
        last = {}
        if self.ids:
            Run.flush_model(["connector_id", "state", "finished_at", "started_at"])
            self.env.cr.execute(
                """SELECT DISTINCT ON (connector_id) connector_id, state, COALESCE(finished_at, started_at, create_date)
                     FROM integration_sync_run
                    WHERE connector_id = ANY(%s) AND state IN ('done', 'partial', 'failed')
                 ORDER BY connector_id, id DESC""",
                [self.ids],
            )
            last = {row[0]: row[1:] for row in self.env.cr.fetchall()}
        running = Run.search([("connector_id", "in", self.ids), ("state", "=", "running")])
        for connector in self:
            state, at = last.get(connector.id, (False, False))
            connector.sync_last_state = state
            connector.sync_last_at = at
            mine = running.filtered(lambda run, connector=connector: run.connector_id == connector)
            connector.sync_running_count = len(mine)
            connector.sync_running_progress = sum(mine.mapped("progress")) / len(mine) if mine else 0.0

    def action_sync_now(self):
        """Card button: run every active, unpaused flow of the connector now."""
        flows = self.sync_flow_ids.filtered(lambda flow: flow.active and not flow.is_paused)
        if not flows:
            raise UserError(self.env._("%s has no active sync flow to run.", self.display_name))
        for flow in flows:
            flow.action_sync_now()
        return notification(self.env._("Sync started"), self.env._("%s sync flow(s) started.", len(flows)))

    def action_open_failed(self):
        """Card button: the connector's failed items, the kind with failures first
        (events, then sync runs, then jobs and errors); each list has its Retry."""
        self.ensure_one()
        if self.webhook_failed_count:
            return self.action_open_failed_webhook_events()
        if self.sync_failed_run_count:
            return self.action_view_failed_sync_runs()
        if self.job_failed_count:
            return self.action_open_failed_jobs()
        return self.action_open_errors()

    def action_open_failed_jobs(self):
        """The errors of this connector's failed jobs, with Retry (operators need no Job Queue rights)."""
        action = self.action_open_errors()
        action["domain"] = [("connector_id", "=", self.id), ("job_state", "=", "failed")]
        action["context"] = {}
        return action

    def action_retry_failed(self):
        """Card button: retry every failed event, sync run and failed job of the connector."""
        self.ensure_one()
        events = self.env["integration.webhook.event"].search(
            [("connector_id", "=", self.id), ("state", "=", "failed")]
        )
        runs = self.env["integration.sync.run"].search(
            [("connector_id", "=", self.id), ("state", "in", ("failed", "partial"))]
        )
        # The errors of the events and runs retried here are theirs: retrying those records
        # resolves them (and cancels their failed jobs), so they are not retried twice.
        retried = {("integration.webhook.event", event_id) for event_id in events.ids}
        retried |= {("integration.sync.run", run_id) for run_id in runs.ids}
        errors = (
            self.env["integration.error"]
            .search([("connector_id", "=", self.id), ("state", "=", "new")])
            .filtered(lambda error: error.can_retry and (error.res_model, error.res_id) not in retried)
        )
        if not (events or runs or errors):
            raise UserError(self.env._("%s has nothing failed to retry.", self.display_name))
        if events:
            events.action_retry()
        if runs:
            runs.action_retry()
        errors = errors.exists().filtered(lambda error: error.state == "new" and error.can_retry)
        if errors:
            errors.action_retry()
        return notification(
            self.env._("Retry queued"),
            self.env._(
                "Queued again: %(events)s event(s), %(runs)s sync run(s), %(jobs)s job(s).",
                events=len(events),
                runs=len(runs),
                jobs=len(errors),
            ),
        )
