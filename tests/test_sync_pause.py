"""Pause and Resume on a flow, as the buttons do: what waits, and what goes on afterwards."""

from datetime import timedelta

from odoo import fields
from odoo.tests import tagged

from ..sandbox.orders import OrdersSandbox
from .common import IntegrationHubCase, run_job


@tagged("post_install", "-at_install")
class TestSyncPause(IntegrationHubCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        now = fields.Datetime.now().replace(microsecond=0)
        # 10 orders changed 20 to 10 minutes ago: one window of a flow without a cursor.
        cls.sandbox = OrdersSandbox(orders=10, start=now - timedelta(minutes=20), span=timedelta(minutes=10)).start()
        cls.addClassCleanup(cls.sandbox.stop)
        cls.connector = cls._create_connector(base_url=cls.sandbox.url)
        cls.flow = cls.env["integration.sync.flow"].create(
            {
                "name": "Orders",
                "code": "orders",
                "connector_id": cls.connector.id,
                "model_id": cls.env.ref("base.model_res_partner").id,
                "remote_path": "/pedidos",
                "id_json_path": "pedidoId",
                "field_ids": [
                    (0, 0, {"json_path": "codigo", "field_id": cls.env.ref("base.field_res_partner__ref").id}),
                    (0, 0, {"json_path": "cliente.nome", "field_id": cls.env.ref("base.field_res_partner__name").id}),
                ],
            }
        )

    def _run_queued_jobs(self):
        """Run the stored jobs of the flow's runs, as the runner would; their uuids."""
        jobs = self.env["queue.job"].search([("model_name", "=", "integration.sync.run"), ("state", "=", "pending")])
        for job in jobs:
            self.assertIsNone(run_job(self.env, job.uuid))
        self.env.invalidate_all()
        return jobs.mapped("uuid")

    def test_a_run_whose_job_comes_while_paused_waits_and_resume_runs_it(self):
        self.flow.action_sync_now()
        self.flow.action_pause()
        self.assertEqual(len(self._run_queued_jobs()), 1, "the window's job comes while paused")
        run = self.flow.run_ids
        self.assertEqual((run.state, run.job_uuid, run.fetched_count), ("queued", False, 0), "it waits, without a job")
        self.assertEqual(self.sandbox.stats["pages_served"], 0, "nothing was asked while paused")
        self.flow.action_resume()
        self.assertEqual(self._run_queued_jobs(), [run.job_uuid], "Resume queued it again")
        self.assertEqual((run.state, run.created_count), ("done", 10))
        self.assertEqual(self.flow.cursor_at, run.window_end, "the cursor moves on")

    def test_sync_now_after_a_paused_run_resumed_plans_new_windows(self):
        # A run left waiting by a pause would hold every later Sync Now ("windows wait").
        self.flow.action_sync_now()
        self.flow.action_pause()
        self._run_queued_jobs()
        self.flow.action_resume()
        self._run_queued_jobs()
        self.flow.cursor_at -= timedelta(minutes=5)  # five minutes of changes to read again
        self.flow.action_sync_now()
        self.assertEqual(len(self.flow.run_ids), 2, "a new window, nothing left waiting")
        self.assertEqual(len(self._run_queued_jobs()), 1)
        self.assertEqual(set(self.flow.run_ids.mapped("state")), {"done"})
