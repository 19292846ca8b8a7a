import logging
from urllib.parse import quote

import psycopg2
from psycopg2.extras import execute_values

from odoo import fields, models
from odoo.exceptions import UserError, ValidationError

from odoo.addons.queue_job.exception import RetryableJobError

from ...const import PAUSED_RETRY_AFTER
from ...core.exceptions import MappingError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import loads_or_none, payload_digest
from ...core.textsafe import unique_key

TRUE_TEXTS = ("1", "true", "yes", "y", "s", "sim")


def _is_true(value):
    return value is True or (isinstance(value, int | float) and value == 1) or str(value).strip().lower() in TRUE_TEXTS


_logger = logging.getLogger(__name__)


class IntegrationSyncFlow(models.Model):
    """The upsert of remote documents into the flow's model, shared by windows and by single
    records (webhooks): map, bind, skip unchanged, count failures, keep the others."""

    _inherit = "integration.sync.flow"

    def _import_prepared(self):
        """What every page of a window maps with, read once per window: the compiled field
        map and the name of the connector's map hook (None without one)."""
        name = f"_sync_map_{self.connector_id.kind}_{self.code}"
        return {"field_map": self.field_ids._field_map(), "hook": name if hasattr(self.connector_id, name) else None}

    def _import_documents(self, documents, run=None, prepared=None):
        """Create or update the Odoo records of remote ``documents``, bind them; returns counts.

        Idempotent: a document whose binding holds the same digest is skipped, so a window
        read twice creates nothing and writes nothing. A document that cannot be mapped (or
        whose record cannot be written) is counted failed, with its reason on the run; the
        others go through.
        """
        connector = self.connector_id
        Model = self._model()
        Binding = self.env["integration.binding"].sudo()
        prepared = prepared or self._import_prepared()
        field_map = prepared["field_map"]
        hook = getattr(connector, prepared["hook"]) if prepared["hook"] else None
        counts = {"created_count": 0, "updated_count": 0, "unchanged_count": 0, "deleted_count": 0, "failed_count": 0}
        errors = []
        by_external = self._documents_by_id(documents, counts, errors)
        bindings = {
            row["external_id"]: row
            for row in Binding.with_context(active_test=False).search_read(
                [
                    ("connector_id", "=", connector.id),
                    ("res_model", "=", self.model_name),
                    ("external_id", "in", list(by_external)),
                ],
                ["external_id", "res_id", "payload_hash", "is_deleted"],
            )
        }
        bound_ids = {row["res_id"] for row in bindings.values()}
        existing = set(Model.browse(list(bound_ids)).exists().ids) if bound_ids else set()
        now = fields.Datetime.now()
        new_values, new_keys = [], []
        touched = {}
        adopted_ids = set()
        for external_id, document in by_external.items():
            binding = bindings.get(external_id)
            record_id = binding["res_id"] if binding and binding["res_id"] in existing else None
            digest = payload_digest(document)
            if self.deleted_json_path and _is_true(json_path_get(document, self.deleted_json_path)):
                deleted = record_id and not binding["is_deleted"]
                if deleted:
                    self._import_delete(Model.browse(record_id))
                    Binding.browse(binding["id"]).write({"is_deleted": True, "sync_date": now, "payload_hash": digest})
                counts["deleted_count" if deleted else "unchanged_count"] += 1
                continue
            if record_id and not binding["is_deleted"] and binding["payload_hash"] == digest:
                counts["unchanged_count"] += 1
                continue
            try:
                values = field_map.to_odoo(document)
                if hook:
                    values = hook(self, document, values)
            except (MappingError, UserError, ValueError, TypeError) as exc:
                counts["failed_count"] += 1
                errors.append(self.env._("%(id)s: %(error)s", id=external_id, error=exc))
                continue
            if not record_id and self.match_field_id:
                record_id = self._adopt(Model, external_id)
                if record_id:
                    adopted_ids.add(record_id)
            if record_id:
                try:
                    with self.env.cr.savepoint():
                        Model.browse(record_id).write(values)
                except (UserError, ValidationError, psycopg2.IntegrityError) as exc:
                    counts["failed_count"] += 1
                    errors.append(self.env._("%(id)s: %(error)s", id=external_id, error=_short(exc)))
                    continue
                counts["updated_count"] += 1
                touched[external_id] = (record_id, digest)
            else:
                new_values.append(values)
                new_keys.append((external_id, digest))
        for (external_id, digest), record_id in zip(
            new_keys, self._create_records(Model, new_values, errors, [key for key, _digest in new_keys]), strict=True
        ):
            if record_id:
                counts["created_count"] += 1
                touched[external_id] = (record_id, digest)
            else:
                counts["failed_count"] += 1
        self._write_bindings(Binding, bindings, touched, now, adopted_ids)
        if errors and run is not None:
            counts["error"] = run._add_errors(errors)
        elif errors:
            raise UserError("\n".join(errors[:5]))
        return counts

    def _documents_by_id(self, documents, counts, errors):
        """{external id: document} of a page (the last copy of a repeated id wins); a
        document without a usable id is counted failed."""
        by_external = {}
        for document in documents:
            external_id = json_path_get(document, self.id_json_path) if isinstance(document, dict) else None
            if external_id is None or isinstance(external_id, dict | list) or str(external_id).strip() == "":
                counts["failed_count"] += 1
                errors.append(self.env._("a record without an id at %r", self.id_json_path))
                continue
            by_external[unique_key(str(external_id))] = document
        return by_external

    def _create_records(self, Model, values_list, errors, keys):
        """Create in one call; if that fails, one by one to keep the good ones (each failure
        named by its remote id ``keys[i]``). Ids (or None)."""
        if not values_list:
            return []
        try:
            with self.env.cr.savepoint():
                return Model.create(values_list).ids
        except (UserError, ValidationError, psycopg2.IntegrityError, ValueError) as exc:
            _logger.info(
                "Flow %s: %d records not created together (%s); one by one",
                self.code,
                len(values_list),
                _short(exc),
            )
        ids = []
        for key, values in zip(keys, values_list, strict=True):
            try:
                with self.env.cr.savepoint():
                    ids.append(Model.create(values).id)
            except (UserError, ValidationError, psycopg2.IntegrityError, ValueError) as exc:
                errors.append(self.env._("%(id)s: %(error)s", id=key, error=_short(exc)))
                ids.append(None)
        return ids

    def _write_bindings(self, Binding, bindings, touched, now, adopted_ids=()):
        new = []
        for external_id, (record_id, digest) in touched.items():
            binding = bindings.get(external_id)
            values = {
                "res_id": record_id,
                "payload_hash": digest,
                "sync_date": now,
                "is_deleted": False,
                "last_error": False,
            }
            if binding:
                Binding.browse(binding["id"]).write(values)
            else:
                new.append(
                    dict(values, connector_id=self.connector_id.id, res_model=self.model_name, external_id=external_id)
                )
        adopted = [v["res_id"] for v in new if v["res_id"] in adopted_ids]
        if adopted:
            # A record adopted by its key field may hold a binding under another id: moved.
            Binding.search(
                [
                    ("connector_id", "=", self.connector_id.id),
                    ("res_model", "=", self.model_name),
                    ("res_id", "in", adopted),
                ]
            ).unlink()
        if new:
            self._insert_bindings(new)

    def _insert_bindings(self, rows):
        """New bindings of a page in one INSERT: a binding is a plain row of this addon's own
        table (no computed field but the connector's company, no override), and the ORM's
        per-record create cost a tenth of an import's time. The unique constraints still
        hold: a concurrent import of the same id fails the page, which is retried."""
        self.env.flush_all()
        uid = self.env.uid
        company_id = self.connector_id.company_id.id
        execute_values(
            self.env.cr._obj,
            """INSERT INTO integration_binding
                   (connector_id, company_id, res_model, res_id, external_id, payload_hash, sync_date,
                    is_deleted, create_uid, write_uid, create_date, write_date)
               VALUES %s""",
            [
                (
                    row["connector_id"],
                    company_id,
                    row["res_model"],
                    row["res_id"],
                    row["external_id"],
                    row["payload_hash"],
                    row["sync_date"],
                    False,
                    uid,
                    uid,
                    row["sync_date"],
                    row["sync_date"],
                )
                for row in rows
            ],
            page_size=1000,
        )
        self.env["integration.binding"].invalidate_model()

    def _adopt(self, Model, external_id):
        field = self.match_field_id
        value = external_id
        if field.ttype == "integer":
            try:
                value = int(external_id)
            except ValueError:
                return None
        found = Model.search([(field.name, "=", value)], limit=2)
        return found.id if len(found) == 1 else None

    def _import_delete(self, record):
        if self.import_delete_action == "archive" and "active" in record._fields:
            record.active = False
        elif self.import_delete_action == "unlink":
            record.unlink()

    # A single record (webhooks) ------------------------------------------------------------

    def _import_one(self, external_id):
        """Fetch one remote record by id and upsert it like a window would (same map, same
        bindings); returns the Odoo record. For webhook handlers announcing one record."""
        self.ensure_one()
        if not self.active:
            raise UserError(self.env._("Flow %s is archived: it imports nothing.", self.name))
        if self.is_paused:
            # The announcement waits (a webhook event stays queued and is tried again).
            raise RetryableJobError(
                self.env._("Flow %s is paused: the record is imported after Resume.", self.name),
                seconds=PAUSED_RETRY_AFTER,
            )
        if not self.record_path:
            raise UserError(self.env._("Flow %s has no Single Record Path to fetch one record.", self.name))
        path = self.record_path.replace("{id}", quote(str(external_id), safe=""))
        response = self.connector_id._request("GET", path, operation=f"{self.code}: record {external_id}")
        document = loads_or_none(response.content)
        if not isinstance(document, dict):
            raise UserError(
                self.env._("Flow %(flow)s: %(path)s did not answer a JSON object.", flow=self.name, path=path)
            )
        if self.records_json_path and isinstance(json_path_get(document, self.records_json_path), dict):
            document = json_path_get(document, self.records_json_path)
        try:
            with self.env.cr.savepoint():
                self._import_documents([document])
        except psycopg2.errors.UniqueViolation:
            # A window bound the same record meanwhile: once more, its binding is found.
            with self.env.cr.savepoint():
                self._import_documents([document])
        return self.env["integration.binding"]._to_internal(
            self.connector_id, self.model_name, json_path_get(document, self.id_json_path)
        )


def _short(exc):
    """An exception's first line of text, bounded, on one line (it may quote a partner's data)."""
    text = str(getattr(exc, "args", [exc])[0] if getattr(exc, "args", None) else exc)
    return " ".join(text.split())[:300]
