from odoo import models
from odoo.exceptions import UserError

from ...core.actions import notification


class IntegrationSyncFlow(models.Model):
    """The flow's buttons: Sync Now, Full Reload, Pause/Resume, Reset Cursor, Runs, Bindings."""

    _inherit = "integration.sync.flow"

    def action_sync_now(self):
        """Button: plan and queue this flow's work now (operators may, as they may Retry)."""
        self.check_access("read")
        for flow in self.sudo():
            if not flow.active or flow.is_paused:
                raise UserError(self.env._("Flow %s is paused or archived: resume it first.", flow.name))
            flow._sync()
        return self._notify(self.env._("Sync queued: follow it in the runs."))

    def action_full_reload(self):
        """Button (confirmed in the view): forget the cursor; the next run reads everything."""
        self.write({"cursor_at": False, "is_reload_pending": True})
        for flow in self:
            flow.message_post(body=self.env._("Full reload requested by %s.", self.env.user.name))
        return True

    def action_pause(self):
        self.write({"is_paused": True})
        return True

    def action_resume(self):
        """Button: the runs that waited are queued again, scheduled flow or not."""
        self.write({"is_paused": False})
        for flow in self:
            flow._kick_queued_runs()  # what the pause held back (manual Syncs too)
        return True

    def action_reset_cursor(self):
        """Button: the wizard that sets the cursor to a date."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Reset Cursor"),
            "res_model": "integration.sync.cursor.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_flow_id": self.id, "default_cursor_at": self.cursor_at},
        }

    def action_view_runs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_sync_run_action")
        action["domain"] = [("flow_id", "=", self.id)]
        action["context"] = {"default_flow_id": self.id}
        return action

    def action_view_bindings(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_binding_action")
        action["domain"] = [("connector_id", "=", self.connector_id.id), ("res_model", "=", self.model_name)]
        return action

    def _notify(self, message):
        return notification(self.env._("Sync"), message)
