from odoo import models

from odoo.addons.base.models.ir_model import MODULE_UNINSTALL_FLAG


class Base(models.AbstractModel):
    """Deletion tracking for exported models: unlinking a record that an export flow sent
    keeps its binding as a tombstone, so that the next export sends the deletion."""

    _inherit = "base"

    def unlink(self):
        # Not while a module's data is removed (an uninstall drops this addon's tables and
        # columns one by one meanwhile).
        if self.ids and "integration.sync.flow" in self.env and not self.env.context.get(MODULE_UNINSTALL_FLAG):
            connector_ids = self.env["integration.sync.flow"]._tombstone_connectors().get(self._name)
            if connector_ids:
                Binding = self.env["integration.binding"].sudo()
                for connector in self.env["integration.connector"].sudo().browse(connector_ids):
                    Binding._mark_deleted(connector, self._name, self.ids)
        return super().unlink()
