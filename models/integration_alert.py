from datetime import timedelta

from markupsafe import Markup

from odoo import Command, api, fields, models
from odoo.exceptions import AccessError, UserError

from ..const import MANAGER_GROUP

KINDS = [
    ("status", "Status"),
    ("error_rate", "Error Rate"),
    ("job_exhausted", "Job Gave Up"),
    ("job_stuck", "Stuck Jobs"),
    ("sync_run", "Sync Run"),
]
STATES = [("open", "Open"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved")]
ACTIVITY_TYPE = "integration_hub.mail_activity_type_integration_alert"
FAILURE_TEMPLATE = "integration_hub.mail_template_integration_alert_failure"
RECOVERY_TEMPLATE = "integration_hub.mail_template_integration_alert_recovery"
# What an operator may change on an alert (through Acknowledge and Resolve); the rest is
# the hub's own record of what happened.
TRIAGE_FIELDS = {
    "state",
    "acknowledged_at",
    "acknowledged_by_id",
    "resolved_at",
    "resolved_by_id",
    "resolution",
    "next_notify_at",
}


class IntegrationAlert(models.Model):
    """Something about a connector that needs a person: open, acknowledged, resolved.

    One alert per connector, ``kind`` and ``key`` (the flow code of a sync run alert, empty
    otherwise) is live at a time. Code never creates alerts directly; it calls two methods
    and the throttling below is theirs:

    - ``_raise(connector, kind, reason, ...)``: the condition holds (again). A live alert is
      updated silently (reason, severity, details); one resolved less than the connector's
      *Min Interval* ago is reopened silently, and told again only if it is still open that
      long after; otherwise a new alert is opened and told: an activity for the connector's
      *Alert Responsible*, a note on the connector and the alert, and the FAILURE email to the
      connector's *Alert Recipients* (queued in ``mail.mail``).
    - ``_resolve(connector, kind, key, note)``: the condition is gone. The live alert is
      resolved (``resolution`` auto), its activity marked done and, when a FAILURE email went
      out for it, the RECOVERED email is sent.

    An open alert is emailed again every *Re-notify Interval* (``_cron_renotify``) until
    someone acknowledges or resolves it. A flapping API thus makes one alert and two emails
    (failure, recovery), whatever the number of flaps within the minimum interval.

    Reasons and details are written from texts that are already redacted (the health reason,
    ``integration.error`` messages, run errors): never put request bodies or headers here.
    """

    _name = "integration.alert"
    _description = "Integration Alert"
    _inherit = ["mail.thread", "mail.activity.mixin", "integration.related.mixin"]
    _order = "opened_at desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True, index=True)
    kind = fields.Selection(KINDS, string="Type", required=True, readonly=True)
    key = fields.Char(readonly=True, help="What the alert is about within its type: the flow code of a sync run alert.")
    severity = fields.Selection(
        [("warning", "Warning"), ("error", "Error")], default="error", required=True, readonly=True, tracking=True
    )
    state = fields.Selection(STATES, default="open", required=True, readonly=True, tracking=True, index=True)
    reason = fields.Char(readonly=True, tracking=True)
    details = fields.Text(readonly=True)
    recommended_action = fields.Text(readonly=True)
    opened_at = fields.Datetime(default=fields.Datetime.now, required=True, readonly=True)
    acknowledged_at = fields.Datetime(readonly=True, copy=False)
    acknowledged_by_id = fields.Many2one("res.users", readonly=True, copy=False)
    resolved_at = fields.Datetime(readonly=True, copy=False)
    resolved_by_id = fields.Many2one(
        "res.users", readonly=True, copy=False, help="Empty when the hub saw the recovery."
    )
    resolution = fields.Selection([("auto", "Recovered"), ("manual", "Resolved by Hand")], readonly=True, copy=False)
    last_notified_at = fields.Datetime(string="Last Notified", readonly=True, copy=False)
    last_notice = fields.Selection(
        [("failure", "Failure"), ("recovery", "Recovery")],
        readonly=True,
        copy=False,
        help="The last email sent: a recovery is sent only after a failure was.",
    )
    notify_count = fields.Integer(string="Notices", readonly=True, copy=False, help="FAILURE emails sent.")
    next_notify_at = fields.Datetime(
        string="Next Notice",
        readonly=True,
        copy=False,
        index="btree_not_null",
        help="When an alert still open is emailed again (empty once acknowledged or resolved).",
    )

    @api.depends("connector_id.name", "reason")
    def _compute_name(self):
        for alert in self:
            alert.name = f"{alert.connector_id.name or ''}: {alert.reason or ''}"

    def write(self, vals):
        # Operators acknowledge and resolve; what an alert says is the hub's to write.
        if set(vals) - TRIAGE_FIELDS and not self.env.su and not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Integration users may only acknowledge or resolve alerts."))
        return super().write(vals)

    # Actions ---------------------------------------------------------------------------

    def action_acknowledge(self):
        """Button: someone is on it; no more re-notification emails for these alerts."""
        alerts = self.filtered(lambda a: a.state == "open")
        if not alerts:
            raise UserError(self.env._("Only open alerts can be acknowledged."))
        alerts.write(
            {
                "state": "acknowledged",
                "acknowledged_at": fields.Datetime.now(),
                "acknowledged_by_id": self.env.user.id,
                "next_notify_at": False,
            }
        )
        return True

    def action_resolve(self):
        """Button: resolved by hand (the RECOVERED email goes out as for a recovery).

        A condition that still holds raises its alert again at the next health check
        (silently within the connector's minimum interval): Acknowledge is the way to
        silence an alert that is being worked on.
        """
        alerts = self.filtered(lambda a: a.state != "resolved")
        if not alerts:
            raise UserError(self.env._("These alerts are already resolved."))
        alerts.check_access("write")
        alerts.sudo()._close(resolved_by=self.env.user, note=self.env._("Resolved by %s.", self.env.user.name))
        return True

    # Model API -------------------------------------------------------------------------

    @api.model
    def _live(self, connector, kind, key=""):
        """The open or acknowledged alert of ``connector``, ``kind`` and ``key`` (or none)."""
        return self.sudo().search(
            [
                ("connector_id", "=", connector.id),
                ("kind", "=", kind),
                ("key", "=", key or False),
                ("state", "!=", "resolved"),
            ],
            limit=1,
        )

    @api.model
    def _raise(self, connector, kind, reason, severity="error", key="", details=None, related=None):
        """The condition ``kind`` (``key``) holds on ``connector``: open, reopen or update its alert.

        ``reason`` is a short line in words (it names the alert), ``details`` a longer text;
        both must already be free of secrets. ``related`` is the record the alert is about
        (a run, an error), for the alert's Related Record button. Returns the alert.
        Throttled as the class docstring says: safe to call on every health check.
        """
        Alert = self.sudo()
        now = fields.Datetime.now()
        values = {"reason": reason, "severity": severity}
        if details is not None:
            values["details"] = details
        if related is not None:
            values.update(res_model=related._name if related else False, res_id=related.id if related else False)
        alert = Alert._live(connector, kind, key)
        if alert:
            changed = {name: value for name, value in values.items() if alert[name] != value}
            if changed:
                alert.write(changed)  # silently: reason and severity are tracked in its chatter
            return alert
        alert = Alert.search(
            [
                ("connector_id", "=", connector.id),
                ("kind", "=", kind),
                ("key", "=", key or False),
                ("state", "=", "resolved"),
                ("resolved_at", ">=", now - timedelta(minutes=connector.alert_min_interval)),
            ],
            order="resolved_at desc, id desc",
            limit=1,
        )
        if alert:
            # A flap: the same alert again, told only if it is still open after the interval.
            alert.write(
                dict(
                    values,
                    state="open",
                    resolved_at=False,
                    resolved_by_id=False,
                    resolution=False,
                    acknowledged_at=False,
                    acknowledged_by_id=False,
                    next_notify_at=now + timedelta(minutes=connector.alert_min_interval),
                )
            )
            alert._message_log(
                body=self.env._(
                    "Failing again %(minutes)s minutes or less after its resolution: reopened without a new "
                    "email (one follows if it is still open in %(minutes)s minutes).",
                    minutes=connector.alert_min_interval,
                )
            )
            return alert
        alert = Alert.create(
            dict(
                values,
                connector_id=connector.id,
                kind=kind,
                key=key or False,
                opened_at=now,
                recommended_action=Alert._recommended_action(connector, kind),
            )
        )
        alert._notify_failure(first=True)
        return alert

    @api.model
    def _resolve(self, connector, kind, key="", note=None):
        """The condition ``kind`` (``key``) is gone on ``connector``: resolve its live alert.

        ``note`` (words, no secrets) says what shows the recovery. Returns the resolved
        alert, or an empty recordset when none was live.
        """
        alert = self._live(connector, kind, key)
        if alert:
            alert._close(resolved_by=None, note=note)
        return alert

    @api.model
    def _cron_renotify(self):
        """Cron: email again the open (unacknowledged) alerts whose next notice is due."""
        due = self.sudo().search(
            [("state", "=", "open"), ("next_notify_at", "<=", fields.Datetime.now())], order="next_notify_at"
        )
        due._notify_failure(first=False)

    # Notices ---------------------------------------------------------------------------

    @api.model
    def _recommended_action(self, connector, kind):
        """What to do, in plain words, for an alert of ``kind`` (extend for new kinds)."""
        return {
            "status": self.env._(
                "Open the connector and press Test Connection; read its Errors for the failing operation and "
                "check the partner's status and the credentials. The alert resolves itself once the success "
                "rate is back above the OK threshold."
            ),
            "error_rate": self.env._(
                "More than %(threshold)s%% of the calls have failed for %(minutes)s minutes. Read the connector's "
                "Errors and API Calls for the failing operation; if the partner is down, tell them (the guide "
                "escalates an error rate that stays above 10%%) and let the retries and the circuit breaker wait "
                "it out.",
                threshold=f"{connector.alert_error_rate_threshold:g}",
                minutes=connector.alert_error_rate_minutes,
            ),
            "job_exhausted": self.env._(
                "A job spent all its attempts on a server error (HTTP 5xx) from the partner. Tell the partner "
                "(the guide escalates a 500 that persists after 5 attempts); once it answers again, open the "
                "error and press Retry, or Ignore it if the work is no longer needed."
            ),
            "job_stuck": self.env._(
                "Jobs have been waiting or running for more than %(minutes)s minutes. Check that the job runner "
                "is running (Job Queue > Jobs shows who is working), then requeue or cancel the stuck jobs.",
                minutes=connector.stuck_job_minutes,
            ),
            "sync_run": self.env._(
                "Open the run and read its error. A failed run moves no cursor: fix the cause (the data, the "
                "mapping or the partner) and press Retry. A partial run lost messages or records: compare its "
                "counts with the partner's summary and retry it."
            ),
        }.get(kind, "")

    def _notify_failure(self, first):
        """Tell: the FAILURE email to the recipients, notes on the alert and connector, and
        (for a new alert, or when the last one was done) an activity for the responsible."""
        now = fields.Datetime.now()
        template = self.env.ref(FAILURE_TEMPLATE, raise_if_not_found=False)
        activity_type = self.env.ref(ACTIVITY_TYPE, raise_if_not_found=False)
        for alert in self:
            connector = alert.connector_id
            sent_to = alert._send_template(template)
            user = connector.alert_user_id
            pending = alert.activity_ids.filtered(lambda a: a.activity_type_id == activity_type)
            if user and activity_type and not pending:
                alert.activity_schedule(
                    ACTIVITY_TYPE, summary=alert.name[:200], note=alert.recommended_action, user_id=user.id
                )
            alert.write(
                {
                    "last_notified_at": now,
                    "last_notice": "failure",
                    "notify_count": alert.notify_count + 1,
                    "next_notify_at": now + timedelta(hours=connector.alert_renotify_interval),
                }
            )
            if first:
                what = self.env._(
                    "%(severity)s alert opened: %(reason)s", severity=alert._severity_label(), reason=alert.reason
                )
            else:
                what = self.env._("Still open: notice %(count)s.", count=alert.notify_count)
            body = alert._notice_body(what, sent_to)
            alert.message_post(body=body, subtype_xmlid="mail.mt_note")
            if first:
                connector.message_post(
                    body=Markup("%s<br/>%s") % (alert._html_link(), body), subtype_xmlid="mail.mt_note"
                )

    def _close(self, resolved_by, note):
        """Resolve: activities done, notes posted, and the RECOVERED email if a FAILURE one went out."""
        now = fields.Datetime.now()
        template = self.env.ref(RECOVERY_TEMPLATE, raise_if_not_found=False)
        for alert in self:
            alert.write(
                {
                    "state": "resolved",
                    "resolved_at": now,
                    "resolved_by_id": resolved_by.id if resolved_by else False,
                    "resolution": "manual" if resolved_by else "auto",
                    "next_notify_at": False,
                }
            )
            alert.activity_feedback([ACTIVITY_TYPE], feedback=note or self.env._("Resolved."))
            sent_to = self.env["res.partner"]
            if alert.last_notice == "failure":
                sent_to = alert._send_template(template)
                alert.write({"last_notice": "recovery", "last_notified_at": now})
            what = self.env._("Resolved: %s", note) if note else self.env._("Resolved.")
            body = alert._notice_body(what, sent_to)
            alert.message_post(body=body, subtype_xmlid="mail.mt_note")
            alert.connector_id.message_post(
                body=Markup("%s<br/>%s") % (alert._html_link(), body), subtype_xmlid="mail.mt_note"
            )

    def _send_template(self, template):
        """Queue ``template``'s email about this alert to the connector's recipients; returns them."""
        self.ensure_one()
        partners = self.connector_id.alert_partner_ids
        if template and partners:
            template.send_mail(
                self.id,
                email_values={"recipient_ids": [Command.link(partner.id) for partner in partners]},
            )
        return partners if template else self.env["res.partner"]

    def _notice_body(self, what, sent_to):
        if not sent_to:
            return Markup("%s") % what
        return Markup("%s<br/>%s") % (
            what,
            self.env._("Emailed to %s.", ", ".join(sent_to.mapped("display_name"))),
        )

    def _html_link(self):
        return Markup('<a href="#" data-oe-model="%s" data-oe-id="%s">%s</a>') % (self._name, self.id, self.name)

    def _severity_label(self):
        return dict(self._fields["severity"]._description_selection(self.env))[self.severity]
