from odoo import models

# The addon's job targets and how each leads to its connector: the jobs of the addon are
# those whose records are of these models (whatever channel an integrator routed them to).
JOB_CONNECTOR_COLUMN = {
    "integration.connector": ("integration_connector", "id"),
    "integration.webhook.event": ("integration_webhook_event", "connector_id"),
    "integration.sync.flow": ("integration_sync_flow", "connector_id"),
    "integration.sync.run": ("integration_sync_run", "connector_id"),
}


class QueueJob(models.Model):
    """Failed jobs can be retried from the error log (see ``integration.error``); the
    addon's job figures per connector come from here (health, alerts, dashboard, metrics)."""

    _inherit = "queue.job"

    def _integration_can_retry(self):
        self.ensure_one()
        return self.state == "failed"

    def _integration_retry(self):
        # Operators may retry the jobs of the errors they see, without Job Queue rights.
        self.sudo().requeue()

    def _integration_job_figures(self, stuck_minutes=30):
        """Per connector id: ``{"failed": n, "stuck": n, "oldest_stuck_at": datetime or None}``.

        A job is stuck when it has been *started* or *enqueued* for more than
        ``stuck_minutes``. One query; it reads only failed, started and enqueued jobs
        (``state`` is indexed), never the done ones.
        """
        parts = []
        for model, (table, column) in JOB_CONNECTOR_COLUMN.items():
            parts.append(
                f"""SELECT t.{column} AS connector_id, j.state,
                           COALESCE(j.date_started, j.date_enqueued) AS since
                      FROM queue_job j
                      CROSS JOIN LATERAL jsonb_array_elements_text(
                           -- queue_job stores the serialized recordset as a JSON string
                           CASE jsonb_typeof(j.records) WHEN 'string' THEN (j.records #>> '{{}}')::jsonb
                                ELSE j.records END -> 'ids') AS r(id)
                      JOIN {table} t ON t.id = r.id::integer
                     WHERE j.state IN ('failed', 'started', 'enqueued') AND j.model_name = '{model}'"""
            )
        self.env["queue.job"].flush_model(["state", "records", "model_name", "date_started", "date_enqueued"])
        self.env.cr.execute(
            f"""SELECT connector_id,
                       COUNT(*) FILTER (WHERE state = 'failed'),
                       COUNT(*) FILTER (WHERE state <> 'failed'
                                          AND since < (now() AT TIME ZONE 'UTC') - make_interval(mins => %s)),
                       MIN(since) FILTER (WHERE state <> 'failed'
                                          AND since < (now() AT TIME ZONE 'UTC') - make_interval(mins => %s))
                  FROM ({" UNION ALL ".join(parts)}) jobs
              GROUP BY connector_id""",  # noqa: S608 - tables and columns are the constants above
            [int(stuck_minutes), int(stuck_minutes)],
        )
        return {
            connector_id: {"failed": failed, "stuck": stuck, "oldest_stuck_at": oldest}
            for connector_id, failed, stuck, oldest in self.env.cr.fetchall()
        }
