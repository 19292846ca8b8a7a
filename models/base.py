from odoo import models


class Base(models.AbstractModel):
    """Deletion tracking for exported models: unlinking a record that an export flow sent
    keeps its binding as a tombstone, so that the next export sends the deletion."""

    _inherit = "base"

    def unlink(self):
        if self.ids and "integration.sync.flow" in self.env:
            connector_ids = self.env["integration.sync.flow"]._tombstone_connectors().get(self._name)
            if connector_ids:
                Binding = self.env["integration.binding"].sudo()
                for connector in self.env["integration.connector"].sudo().browse(connector_ids):
                    Binding._mark_deleted(connector, self._name, self.ids)
        return super().unlink()
