from odoo import fields, models


class IntegrationSyncCursorWizard(models.TransientModel):
    """Reset a flow's cursor to a date: the next run starts there (nothing is deleted)."""

    _name = "integration.sync.cursor.wizard"
    _description = "Reset a Sync Flow's Cursor"

    flow_id = fields.Many2one("integration.sync.flow", required=True, ondelete="cascade")
    cursor_at = fields.Datetime(string="New Cursor", help="Empty: the flow starts from its Start At.")

    def action_apply(self):
        self.ensure_one()
        old = self.flow_id.cursor_at
        self.flow_id.cursor_at = self.cursor_at
        self.flow_id.message_post(
            body=self.env._(
                "Cursor moved from %(old)s to %(new)s by %(user)s.",
                old=old or "-",
                new=self.cursor_at or "-",
                user=self.env.user.name,
            )
        )
        return {"type": "ir.actions.act_window_close"}
