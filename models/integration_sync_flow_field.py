from odoo import fields, models


class IntegrationSyncFlowField(models.Model):
    """A line of a flow's field map (the same mapper as webhook rules): imports read the
    remote path into the field, exports write the field at the remote path."""

    _name = "integration.sync.flow.field"
    _inherit = ["integration.field.map.mixin"]
    _description = "Sync Flow Field Mapping"

    flow_id = fields.Many2one("integration.sync.flow", required=True, ondelete="cascade", index=True)
    model_id = fields.Many2one(related="flow_id.model_id")
