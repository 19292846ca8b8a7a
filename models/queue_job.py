from odoo import models


class QueueJob(models.Model):
    """Failed jobs can be retried from the error log (see ``integration.error``)."""

    _inherit = "queue.job"

    def _integration_can_retry(self):
        self.ensure_one()
        return self.state == "failed"

    def _integration_retry(self):
        # Operators may retry the jobs of the errors they see, without Job Queue rights.
        self.sudo().requeue()
