from odoo import fields, models


class IntegrationRelatedMixin(models.AbstractModel):
    """The Odoo record a log entry is about (an error's order, an event's contact)."""

    _name = "integration.related.mixin"
    _description = "Link to a Related Record"

    # Most rows have none (an event just received): only the others are indexed.
    res_model = fields.Char(string="Related Model", readonly=True, index="btree_not_null")
    res_id = fields.Many2oneReference(string="Related Record", model_field="res_model", readonly=True)

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
