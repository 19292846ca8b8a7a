import logging

import psycopg2.errors

from odoo import api, fields, models

from ..core.jsonutil import payload_digest
from ..core.textsafe import unique_key

_logger = logging.getLogger(__name__)


class IntegrationBinding(models.Model):
    """The external identity of an Odoo record on one connector: which remote id it is.

    One row per (connector, Odoo model, external id), and per (connector, Odoo model,
    record). Syncs read and write it through a binder API shaped like OCA connector's:

    - ``_to_internal(connector, model, external_id)``: the Odoo record bound to a remote id;
    - ``_to_external(connector, record)``: the remote id of a record;
    - ``_bind(connector, record, external_id, payload=None)``: bind them (idempotent: binding
      the same pair again only refreshes the sync date and the payload digest);
    - ``_is_unchanged(connector, record, payload)``: whether ``payload`` is what was last
      sent or received for the record (its digest), so that an unchanged record is skipped;
    - ``_mark_deleted(connector, model, res_ids)``: the records are gone in Odoo; their
      bindings stay as tombstones, so that an export can still send the deletion.

    Rows are written by syncs (as superuser); operators read them, managers may correct them.
    """

    _name = "integration.binding"
    _description = "Integration Binding (external id of a record)"
    _inherit = ["integration.related.mixin"]
    _order = "sync_date desc, id desc"
    _rec_name = "external_id"

    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True, index=True)
    # The bound record: the related-record link every log of the addon has, required here.
    res_model = fields.Char(string="Model", required=True)
    res_id = fields.Many2oneReference(string="Record", required=True)
    external_id = fields.Char(string="External ID", required=True, help="The record's id on the remote side.")
    sync_date = fields.Datetime(string="Last Sync", help="When the record was last sent or received.")
    payload_hash = fields.Char(
        string="Payload Digest", help="SHA-256 of the payload last sent or received: an unchanged record is skipped."
    )
    is_deleted = fields.Boolean(
        string="Deleted", help="The Odoo record is gone (a tombstone: an export can still send the deletion)."
    )
    last_error = fields.Text(help="Why the remote refused this record, the last time it did.")

    _sql_constraints = [
        (
            "external_uniq",
            "unique(connector_id, res_model, external_id)",
            "This external id is already bound to another record of this model on this connector.",
        ),
        (
            "record_uniq",
            "unique(connector_id, res_model, res_id)",
            "This record already has an external id on this connector.",
        ),
    ]

    @api.depends("res_model", "res_id", "external_id", "connector_id.name")
    def _compute_display_name(self):
        for binding in self:
            binding.display_name = (
                f"{binding.connector_id.name}: {binding.res_model},{binding.res_id} ↔ {binding.external_id}"
            )

    def action_open_related(self):
        """Button: the bound Odoo record, unless it is gone (a tombstone)."""
        self.ensure_one()
        if self.is_deleted or not self.env[self.res_model].browse(self.res_id).exists():
            return False
        return super().action_open_related()

    # Binder API --------------------------------------------------------------------------

    @api.model
    def _find(self, connector, model, external_id=None, res_id=None):
        domain = [("connector_id", "=", connector.id), ("res_model", "=", model)]
        if external_id is not None:
            domain.append(("external_id", "=", unique_key(str(external_id))))
        if res_id is not None:
            domain.append(("res_id", "=", res_id))
        return self.sudo().with_context(active_test=False).search(domain, limit=1)

    @api.model
    def _to_internal(self, connector, model, external_id):
        """The record of ``model`` bound to ``external_id`` on ``connector`` (empty if none,
        or if the record is deleted)."""
        binding = self._find(connector, model, external_id=external_id)
        if not binding or binding.is_deleted:
            return self.env[model]
        return self.env[model].browse(binding.res_id).exists()

    @api.model
    def _to_external(self, connector, record):
        """The external id of ``record`` on ``connector``, or None."""
        record.ensure_one()
        binding = self._find(connector, record._name, res_id=record.id)
        return binding.external_id if binding and not binding.is_deleted else None

    @api.model
    def _bind(self, connector, record, external_id, payload=None):
        """Bind ``record`` to ``external_id`` on ``connector``; returns the binding.

        Idempotent: the same pair again refreshes the sync date (and the digest when a
        payload is given). A record bound to another external id, or an external id bound to
        another record, is rebound (the remote is the authority on its ids). A concurrent
        binding of the same pair (two jobs importing the same record) is found and reused.
        """
        record.ensure_one()
        values = {"sync_date": fields.Datetime.now(), "is_deleted": False, "last_error": False}
        if payload is not None:
            values["payload_hash"] = payload_digest(payload)
        external_id = unique_key(str(external_id))
        for attempt in range(2):
            by_external = self._find(connector, record._name, external_id=external_id)
            by_record = self._find(connector, record._name, res_id=record.id)
            if by_record and by_external and by_record != by_external:
                by_external.unlink()  # the remote id moved to this record: one binding left
            binding = by_record or by_external
            try:
                with self.env.cr.savepoint():
                    if binding:
                        binding.write(dict(values, res_id=record.id, external_id=external_id))
                    else:
                        binding = self.sudo().create(
                            dict(
                                values,
                                connector_id=connector.id,
                                res_model=record._name,
                                res_id=record.id,
                                external_id=external_id,
                            )
                        )
                return binding
            except psycopg2.errors.UniqueViolation:
                if attempt:
                    raise
                _logger.debug("Binding %s of connector %s made concurrently: reused", external_id, connector.code)
        return binding

    @api.model
    def _is_unchanged(self, connector, record, payload):
        """Whether ``payload`` is what was last sent or received for ``record``."""
        binding = self._find(connector, record._name, res_id=record.id)
        return bool(binding and not binding.is_deleted and binding.payload_hash == payload_digest(payload))

    @api.model
    def _mark_deleted(self, connector, model, res_ids):
        """Keep the bindings of deleted records as tombstones; returns how many."""
        bindings = (
            self.sudo()
            .with_context(active_test=False)
            .search(
                [
                    ("connector_id", "=", connector.id),
                    ("res_model", "=", model),
                    ("res_id", "in", list(res_ids)),
                    ("is_deleted", "=", False),
                ]
            )
        )
        bindings.write({"is_deleted": True})
        return len(bindings)
