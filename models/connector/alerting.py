from datetime import timedelta

from odoo import fields, models

# Runs that finished this long before the previous health check are looked at again: a
# run's finished_at is written before its transaction commits, so a check that started in
# between did not see it yet.
RUN_LOOKBACK = timedelta(minutes=10)
# How far back the first check of a connector looks for finished runs.
RUN_FIRST_LOOKBACK = timedelta(hours=1)


class IntegrationConnector(models.Model):
    """Alerting: who is told and when, and the escalation triggers of the health check.

    ``_health_changed`` raises or resolves the *status* alert; ``_refresh_health`` then
    evaluates the other triggers for all the connectors it checked, in a handful of
    queries whatever their number: the error rate held above a threshold for some minutes,
    jobs that gave up on an HTTP 5xx, stuck jobs, and the sync runs that finished since the
    previous check. The alerts themselves (throttling, emails, activities) are
    ``integration.alert``'s: a new trigger calls its ``_raise`` and ``_resolve``.
    """

    _inherit = "integration.connector"

    alert_user_id = fields.Many2one(
        "res.users",
        string="Alert Responsible",
        domain=[("share", "=", False)],
        tracking=True,
        help="Gets an activity on each new alert of this connector (marked done when the alert resolves).",
    )
    alert_partner_ids = fields.Many2many(
        "res.partner",
        "integration_connector_alert_partner_rel",
        "connector_id",
        "partner_id",
        string="Alert Recipients",
        help="Receive the FAILURE and RECOVERED emails of this connector's alerts.",
    )
    alert_min_interval = fields.Integer(
        string="Min Interval (min)",
        default=15,
        help="A failure that comes back within this many minutes of its alert's resolution reopens that "
        "alert without a new email (one follows if it is still open this long after): a flapping API makes "
        "one alert, not a storm.",
    )
    alert_renotify_interval = fields.Integer(
        string="Re-notify Every (h)",
        default=4,
        help="An open alert nobody acknowledged is emailed again after this many hours.",
    )
    alert_error_rate_threshold = fields.Float(
        string="Error Rate Above (%)",
        default=10.0,
        help="Alert when more than this share of the last hour's calls failed (the portal's guide: 10%)...",
    )
    alert_error_rate_minutes = fields.Integer(
        string="For (min)",
        default=15,
        help="...for at least this many minutes in a row.",
    )
    alert_error_rate_since = fields.Datetime(
        string="Error Rate High Since",
        readonly=True,
        copy=False,
        help="Since when the error rate has been above the threshold (empty: it is not).",
    )
    alert_open_count = fields.Integer(string="Open Alerts", compute="_compute_alert_open_count")

    _sql_constraints = [
        ("alert_min_interval_positive", "CHECK(alert_min_interval >= 0)", "The minimum interval cannot be negative."),
        (
            "alert_renotify_interval_positive",
            "CHECK(alert_renotify_interval >= 1)",
            "The re-notify interval is at least one hour.",
        ),
        (
            "alert_error_rate_threshold_range",
            "CHECK(alert_error_rate_threshold >= 0 AND alert_error_rate_threshold < 100)",
            "The error rate threshold is a percentage from 0 to under 100.",
        ),
        ("alert_error_rate_minutes_positive", "CHECK(alert_error_rate_minutes >= 0)", "Minutes cannot be negative."),
    ]

    def _compute_alert_open_count(self):
        groups = self.env["integration.alert"]._read_group(
            [("connector_id", "in", self.ids), ("state", "!=", "resolved")], ["connector_id"], ["__count"]
        )
        counts = {connector.id: count for connector, count in groups}
        for connector in self:
            connector.alert_open_count = counts.get(connector.id, 0)

    def write(self, vals):
        result = super().write(vals)
        if "alert_renotify_interval" in vals:
            # Open alerts follow the new interval from their last notice.
            alerts = (
                self.env["integration.alert"]
                .sudo()
                .search([("connector_id", "in", self.ids), ("state", "=", "open"), ("last_notified_at", "!=", False)])
            )
            for alert in alerts:
                alert.next_notify_at = alert.last_notified_at + timedelta(
                    hours=alert.connector_id.alert_renotify_interval
                )
        return result

    def action_open_alerts(self):
        """Smart button: this connector's alerts, the live ones first."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_alert_action")
        action["domain"] = [("connector_id", "=", self.id)]
        return action

    # Triggers --------------------------------------------------------------------------

    def _health_changed(self, previous):
        """Warning or error raises the status alert (or moves its severity); OK resolves it;
        unknown (no traffic) leaves it as it is."""
        result = super()._health_changed(previous)
        Alert = self.env["integration.alert"]
        for connector in self:
            if connector.health_status in ("warning", "error"):
                Alert._raise(connector, "status", connector.health_reason, severity=connector.health_status)
            elif connector.health_status == "ok":
                Alert._resolve(connector, "status", note=connector.health_reason)
        return result

    def _refresh_health(self):
        """Then the escalation triggers, for all these connectors at once."""
        # Sync runs that finished since the health check cron's previous run are the new ones.
        cron = self.env.ref("integration_hub.ir_cron_integration_connector_health", raise_if_not_found=False)
        previous_check = cron.sudo().lastcall if cron else None
        result = super()._refresh_health()
        self._check_alert_triggers(previous_check)
        return result

    def _check_alert_triggers(self, previous_check):
        """Raise or resolve the error rate, job and sync run alerts of these connectors.

        ``previous_check``: when the health check ran before (None: never); sync runs that
        finished since then (less a margin) are the new ones.
        """
        connectors = self.filtered("id")
        if not connectors:
            return
        now = fields.Datetime.now()
        live = {
            (alert.connector_id.id, alert.kind, alert.key or ""): alert
            for alert in self.env["integration.alert"]
            .sudo()
            .search([("connector_id", "in", connectors.ids), ("state", "!=", "resolved")])
        }
        rates = connectors._alert_error_rates(now)
        exhausted = connectors._alert_exhausted_jobs()
        stuck = connectors._alert_stuck_jobs(now)
        since = previous_check - RUN_LOOKBACK if previous_check else now - RUN_FIRST_LOOKBACK
        runs = connectors._alert_finished_runs(since)
        for connector in connectors:
            with connector._health_guard():
                if connector.health_status in ("warning", "error") and (connector.id, "status", "") not in live:
                    # Still failing, but its alert was resolved by hand: raised again (throttled).
                    self.env["integration.alert"]._raise(
                        connector, "status", connector.health_reason, severity=connector.health_status
                    )
                connector._alert_on_error_rate(rates.get(connector.id, (0, 0)), now, live)
                connector._alert_on_exhausted_jobs(exhausted.get(connector.id), live)
                connector._alert_on_stuck_jobs(stuck.get(connector.id), live)
                connector._alert_on_runs(runs.get(connector.id, {}), live)

    def _alert_resolve_live(self, live, kind, key="", note=None):
        if (self.id, kind, key or "") in live:
            self.env["integration.alert"]._resolve(self, kind, key=key, note=note)

    # The error rate held above its threshold

    def _alert_error_rates(self, now):
        """Connector id -> (calls, successes) over the last hour, as ``calls_1h`` counts them."""
        return {
            connector_id: (buckets["calls_1h"], buckets["ok_1h"])
            for connector_id, buckets in self._metrics_by_connector().items()
        }

    def _alert_on_error_rate(self, figures, now, live):
        calls, ok = figures
        error_rate = 100.0 * (calls - ok) / calls if calls else 0.0
        threshold = self.alert_error_rate_threshold
        figures_text = self.env._(
            "%(rate)s%% of %(calls)s requests failed over the last hour (threshold %(threshold)s%%).",
            rate=f"{error_rate:.1f}".rstrip("0").rstrip("."),
            calls=calls,
            threshold=f"{threshold:g}",
        )
        if not (calls and error_rate > threshold):
            if self.alert_error_rate_since:
                self.sudo().alert_error_rate_since = False
            self._alert_resolve_live(live, "error_rate", note=figures_text)
            return
        if not self.alert_error_rate_since:
            self.sudo().alert_error_rate_since = now
        if now - self.alert_error_rate_since < timedelta(minutes=self.alert_error_rate_minutes):
            return
        self.env["integration.alert"]._raise(
            self,
            "error_rate",
            self.env._(
                "error rate above %(threshold)s%% for %(minutes)s min",
                threshold=f"{threshold:g}",
                minutes=self.alert_error_rate_minutes,
            ),
            details=self.env._(
                "%(figures)s Above the threshold since %(since)s UTC.",
                figures=figures_text,
                since=fields.Datetime.to_string(self.alert_error_rate_since),
            ),
        )

    # Jobs that spent their attempts on an HTTP 5xx

    def _alert_exhausted_jobs(self):
        """Connector id -> (errors, latest error) of the failed jobs that gave up on an HTTP 5xx
        and nobody resolved or ignored yet, in one query.

        Read here rather than written by the failing job: the job's transaction is rolled
        back, its error is already recorded (through a fresh cursor) with the job, and the
        job is marked failed only after that; the health check sees both, one at a time
        (so two jobs failing together make one alert), and the alert's emails and activity
        are written in an ordinary transaction instead of from inside a failing one.
        """
        self.env["integration.error"].flush_model(["state", "status_code", "queue_job_id", "last_seen"])
        self.env["queue.job"].flush_model(["state"])
        self.env.cr.execute(
            """SELECT e.connector_id, COUNT(*), (array_agg(e.id ORDER BY e.last_seen DESC, e.id DESC))[1]
                 FROM integration_error e
                 JOIN queue_job j ON j.id = e.queue_job_id
                WHERE e.state = 'new' AND e.status_code >= 500 AND j.state = 'failed' AND e.connector_id IN %s
             GROUP BY e.connector_id""",
            [tuple(self.ids)],
        )
        Error = self.env["integration.error"].sudo()
        return {connector_id: (count, Error.browse(latest)) for connector_id, count, latest in self.env.cr.fetchall()}

    def _alert_on_exhausted_jobs(self, figures, live):
        if not figures:
            self._alert_resolve_live(
                live, "job_exhausted", note=self.env._("No failed job waits on a server error any more.")
            )
            return
        count, latest = figures
        self.env["integration.alert"]._raise(
            self,
            "job_exhausted",
            self.env._("jobs gave up on a server error (HTTP 5xx)"),
            details=self.env._(
                "%(count)s failure(s) of failed jobs after their last attempt. Latest: %(operation)s, "
                "HTTP %(status)s: %(message)s",
                count=count,
                operation=latest.operation or "",
                status=latest.status_code,
                message=latest.message or "",
            ),
            related=latest,
        )

    # Stuck jobs

    def _alert_stuck_jobs(self, now):
        """Connector id -> (stuck jobs, oldest since), each connector with its own threshold."""
        return {
            connector_id: (found["stuck"], found["oldest_stuck_at"])
            for connector_id, found in self._job_figures().items()
            if found["stuck"]
        }

    def _alert_on_stuck_jobs(self, figures, live):
        if not figures:
            self._alert_resolve_live(live, "job_stuck", note=self.env._("No job is stuck any more."))
            return
        count, oldest = figures
        self.env["integration.alert"]._raise(
            self,
            "job_stuck",
            self.env._("jobs stuck for more than %(minutes)s min", minutes=self.stuck_job_minutes),
            severity="warning",
            details=self.env._(
                "%(count)s job(s) waiting or running for more than %(minutes)s minutes, the oldest since "
                "%(since)s UTC.",
                count=count,
                minutes=self.stuck_job_minutes,
                since=fields.Datetime.to_string(oldest),
            ),
        )

    # Sync runs that failed or lost messages

    def _alert_finished_runs(self, since):
        """Connector id -> {flow: its latest run finished since ``since``}, in one query."""
        Run = self.env["integration.sync.run"].sudo()
        Run.flush_model(["state", "finished_at", "connector_id", "flow_id"])
        self.env.cr.execute(
            """SELECT DISTINCT ON (flow_id) id
                 FROM integration_sync_run
                WHERE connector_id IN %s AND finished_at >= %s AND state IN ('done', 'partial', 'failed')
             ORDER BY flow_id, finished_at DESC, id DESC""",
            [tuple(self.ids), since],
        )
        result = {}
        for run in Run.browse([row[0] for row in self.env.cr.fetchall()]):
            result.setdefault(run.connector_id.id, {})[run.flow_id] = run
        return result

    def _alert_on_runs(self, latest_runs, live):
        Alert = self.env["integration.alert"]
        for flow, run in latest_runs.items():
            key = flow.code or str(flow.id)
            if run.state == "done":
                self._alert_resolve_live(
                    live, "sync_run", key=key, note=self.env._("Run %s went through.", run.display_name)
                )
                continue
            alert = live.get((self.id, "sync_run", key))
            if alert and alert.res_model == run._name and alert.res_id == run.id:
                continue  # this run's alert is already live
            if not alert and Alert.sudo().search_count(
                [("res_model", "=", run._name), ("res_id", "=", run.id), ("kind", "=", "sync_run")], limit=1
            ):
                continue  # seen by an earlier check and resolved since (by hand): not raised again
            if run.state == "failed":
                reason = self.env._("sync run of %s failed", flow.name)
            else:
                reason = self.env._("sync run of %s lost messages or records (partial)", flow.name)
            Alert._raise(
                self,
                "sync_run",
                reason,
                severity="error" if run.state == "failed" else "warning",
                key=key,
                details=self.env._("%(run)s: %(error)s", run=run.display_name, error=run.error or ""),
                related=run,
            )
