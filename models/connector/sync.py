import logging

from odoo import fields, models
from odoo.exceptions import UserError

from ...core.jsonutil import loads_or_none

_logger = logging.getLogger(__name__)


class IntegrationConnector(models.Model):
    """Sync: the connector's flows, and the entry points code and webhooks use.

    - ``_sync_import_record(flow_code, external_id)``: import one remote record through a
      flow (same map, same bindings as its windows), e.g. from a webhook handler;
    - ``_sync_read_entities()``: read the partner's entities list (data-sharing shape) and
      start the full reload of every flow whose table it flags ``forceReload``.
    """

    _inherit = "integration.connector"

    sync_flow_ids = fields.One2many("integration.sync.flow", "connector_id", string="Sync Flows")
    sync_flow_count = fields.Integer(compute="_compute_sync_flow_count")
    sync_failed_run_count = fields.Integer(string="Failed Sync Runs", compute="_compute_sync_flow_count")
    entities_path = fields.Char(
        help="Data-sharing feeds: the entities list naming the tables to send (forceReload starts a full reload)."
    )
    entities_upload_version = fields.Selection(
        [("1", "1 (REST)"), ("2", "2 (gRPC, observability)")], default="2", string="Upload Version"
    )

    def _compute_sync_flow_count(self):
        failed = dict(
            self.env["integration.sync.run"]._read_group(
                [("connector_id", "in", self.ids), ("state", "in", ("failed", "partial"))],
                ["connector_id"],
                ["__count"],
            )
        )
        for connector in self:
            connector.sync_flow_count = len(connector.sync_flow_ids)
            connector.sync_failed_run_count = failed.get(connector, 0)

    def action_view_failed_sync_runs(self):
        """Stat button: the connector's failed and partial runs, each with its Retry."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_sync_run_action")
        action["domain"] = [("connector_id", "=", self.id)]
        action["context"] = {"search_default_filter_failed": 1}
        return action

    def action_view_sync_flows(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_sync_flow_action")
        action["domain"] = [("connector_id", "=", self.id)]
        action["context"] = {"default_connector_id": self.id}
        return action

    def _sync_flow(self, flow_code):
        self.ensure_one()
        flow = (
            self.env["integration.sync.flow"]
            .sudo()
            .search([("connector_id", "=", self.id), ("code", "=", flow_code)], limit=1)
        )
        if not flow:
            raise UserError(self.env._("Connector %(code)s has no sync flow %(flow)r.", code=self.code, flow=flow_code))
        return flow

    def _sync_import_record(self, flow_code, external_id):
        """Import one remote record by id through the flow ``flow_code``; returns the Odoo record."""
        return self._sync_flow(flow_code)._import_one(external_id)

    def _sync_read_entities(self):
        """Read the entities list; flows whose table is flagged ``forceReload`` get a full
        reload, once: a reload already pending or running is not started again (the flag
        stays up at the partner until the reload's summary went through)."""
        self.ensure_one()
        if not self.entities_path:
            raise UserError(self.env._("Connector %s has no Entities Path.", self.code))
        response = self._request(
            "GET",
            self.entities_path,
            headers={"x-upload-version": self.entities_upload_version or "2"},
            operation="entities",
        )
        body = loads_or_none(response.content)
        queries = body.get("queries") if isinstance(body, dict) else body
        if not isinstance(queries, list):
            raise UserError(self.env._("Connector %s: the entities answer holds no list of tables.", self.code))
        reloaded = self.env["integration.sync.flow"]
        for query in queries:
            if not isinstance(query, dict) or not query.get("forceReload"):
                continue
            table = str(query.get("table") or "")
            flows = self.sync_flow_ids.filtered(lambda f, t=table: (f.table_name or f.code).lower() == t.lower())
            for flow in flows:
                running = self.env["integration.sync.run"].search_count(
                    [("flow_id", "=", flow.id), ("is_base_load", "=", True), ("state", "in", ("queued", "running"))]
                )
                if flow.is_reload_pending or running:
                    continue
                flow.action_full_reload()
                reloaded |= flow
        if reloaded:
            _logger.info(
                "Connector %s: full reload asked by the partner for %s", self.code, ", ".join(reloaded.mapped("code"))
            )
        return reloaded
