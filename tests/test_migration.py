"""The pre-migration of 18.0.1.1.0: job channels and functions keep an integrator's choice."""

import importlib.util
import os

from odoo.tests import TransactionCase, tagged

XMLIDS = (
    "queue_job_channel_integration",
    "queue_job_channel_integration_outbound",
    "queue_job_channel_integration_webhook",
    "queue_job_function_connector_job_call",
    "queue_job_function_webhook_event_job_process",
    "queue_job_function_webhook_event_job_dispatch_received",
)


def _migration(version, name):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations", version, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"integration_hub_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@tagged("post_install", "-at_install")
class TestMigration(TransactionCase):
    def _noupdate(self):
        Data = self.env["ir.model.data"]
        return {
            name: Data.search([("module", "=", "integration_hub"), ("name", "=", name)]).noupdate for name in XMLIDS
        }

    def test_channels_and_functions_become_noupdate_and_keep_a_changed_channel(self):
        # As a database installed before 18.0.1.1.0 has them: updatable data.
        self.env.cr.execute(
            "UPDATE ir_model_data SET noupdate = false WHERE module = 'integration_hub' AND name IN %s", [XMLIDS]
        )
        self.env.invalidate_all()
        self.assertEqual(set(self._noupdate().values()), {False})
        # An integrator routed outbound calls to the webhook channel meanwhile.
        function = self.env.ref("integration_hub.queue_job_function_connector_job_call")
        function.channel_id = self.env.ref("integration_hub.queue_job_channel_integration_webhook")
        self.env.flush_all()

        _migration("18.0.1.1.0", "pre-migration").migrate(self.env.cr, "18.0.1.0.0")
        self.env.invalidate_all()
        self.assertEqual(set(self._noupdate().values()), {True})
        # The flag is all the update needs: Odoo skips noupdate records of a module it loads
        # (seen on a database installed with 18.0.1.0.0, then updated: the channel stayed).
        self.assertEqual(function.channel_id, self.env.ref("integration_hub.queue_job_channel_integration_webhook"))

    def test_a_new_install_does_nothing(self):
        before = self._noupdate()
        _migration("18.0.1.1.0", "pre-migration").migrate(self.env.cr, None)
        self.env.invalidate_all()
        self.assertEqual(self._noupdate(), before)
