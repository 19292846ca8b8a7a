import json
import logging
import uuid
from datetime import timedelta

from odoo import fields, models
from odoo.exceptions import UserError

from ...core.exceptions import IntegrationError, MappingError, SyncPageError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import compact_bytes, loads_or_none, payload_digest
from ...core.mapper import remote_value

_logger = logging.getLogger(__name__)

# Ids read per query while planning an export (the records themselves are never all in memory).
PLAN_CHUNK = 2000


def _json_size(document):
    return len(compact_bytes(document))


class IntegrationSyncFlow(models.Model):
    """Export: changed records and tombstones, cut into batches, sent and followed up.

    ``_plan_export`` streams the ids changed since the cursor (``write_date`` past it minus
    the overlap, in id order, a chunk at a time), drops those whose payload is what the
    binding says was last sent, and cuts batches by count and bytes, one run each.
    ``_export_batch`` (the run's job) sends one: as a list (``202`` + a job polled later by a
    delayed job), or as numbered messages then a summary. The transport is ``_request``
    (HTTP JSON); the protocol (numbering, summary, polling) lives here, apart from it.
    """

    _inherit = "integration.sync.flow"

    # Rendering ------------------------------------------------------------------------------

    def _render(self, records):
        """[(record, document)] of ``records``: the map, the remote id, the render hook."""
        field_map = self.field_ids._field_map()
        hook = self._hook("render")
        external = {}
        if self.remote_id_source == "binding":
            for row in (
                self.env["integration.binding"]
                .sudo()
                .search_read(
                    [
                        ("connector_id", "=", self.connector_id.id),
                        ("res_model", "=", self.model_name),
                        ("res_id", "in", records.ids),
                        ("is_deleted", "=", False),
                    ],
                    ["res_id", "external_id"],
                )
            ):
                external[row["res_id"]] = row["external_id"]
        rows = records.read(field_map.field_names) if field_map else [{"id": i} for i in records.ids]
        result = []
        for record, values in zip(records, rows, strict=True):
            document = field_map.to_remote(values, as_string=self.values_as_strings)
            document[self.remote_id_json_path] = self._remote_id(record.id, external.get(record.id))
            if hook:
                document = hook(self, record, document)
            result.append((record, document))
        return result

    def _remote_id(self, res_id, external_id=None):
        value = external_id if external_id is not None else res_id
        if self.values_as_strings:
            return str(value)
        if self.remote_id_source == "odoo_id" or external_id is None:
            return res_id
        return value

    def _tombstone(self, external_id):
        value = int(external_id) if self.remote_id_source == "odoo_id" and str(external_id).isdigit() else external_id
        if self.values_as_strings:
            value = str(value)
        document = {self.remote_id_json_path: value}
        document[self.tombstone_json_path or "DELETED"] = remote_value(True, "boolean", self.values_as_strings)
        return document

    # Planning -------------------------------------------------------------------------------

    def _plan_export(self):
        Run = self.env["integration.sync.run"]
        if Run.search_count([("flow_id", "=", self.id), ("state", "in", ("queued", "running"))]):
            self._kick_queued_runs()
            return Run
        if self.export_protocol == "messages" and self.connector_id.entities_path:
            self._read_entities()
        full = self.mode == "full" or self.is_reload_pending
        until = fields.Datetime.now()
        since = None if full else self._export_since()
        domain = list(self._export_domain())
        if since:
            domain.append(("write_date", ">", since - timedelta(seconds=self.overlap_seconds)))
        # Unique per Sync: two Syncs in one second (a failed plan, then the next) are two plans.
        plan_ref = f"{fields.Datetime.to_string(until)}#{self.id}#{uuid.uuid4().hex[:12]}"
        batches = self._cut_batches(domain, skip_unchanged=not full)
        if self.export_protocol == "messages":
            # One batch per run, its messages numbered inside it.
            batches = [[item for batch in batches for item in batch]] if batches else []
        values = []
        batch_base = int((since or until).timestamp())
        last_batch = Run.search([("flow_id", "=", self.id), ("kind", "=", "batch")], order="id desc", limit=1)
        if last_batch.batch_ref and last_batch.batch_ref.isdigit():
            batch_base = max(batch_base, int(last_batch.batch_ref) + 1)
        for index, batch in enumerate(batches):
            res_ids = [item for item in batch if isinstance(item, int)]
            deleted = [item[1] for item in batch if isinstance(item, tuple)]
            values.append(
                {
                    "flow_id": self.id,
                    "kind": "batch",
                    "plan_ref": plan_ref,
                    "plan_until": until,
                    "batch_ref": str(batch_base + index),
                    "window_start": since or False,
                    "window_end": until,
                    "res_ids_json": json.dumps(res_ids),
                    "deleted_ids_json": json.dumps(deleted),
                    "is_base_load": full,
                }
            )
        runs = Run.create(values)
        if full:
            self.is_reload_pending = False
        if not runs:
            self.cursor_at = until  # nothing changed: the cursor moves all the same
        self._kick_queued_runs()
        return runs

    def _read_entities(self):
        """Feeds with an entities list: read it before planning, so that a table the partner
        flags ``forceReload`` is sent as a base load by this very Sync. An unreachable list
        does not hold the export back (the call is in the error log; the flag is read again
        next time)."""
        try:
            self.connector_id._sync_read_entities()
        except (IntegrationError, UserError) as exc:
            _logger.warning("Flow %s: entities not read, planned without them: %s", self.code, exc)

    def _export_since(self):
        if self.cursor_source == "remote":
            remote = self._remote_cursor()
            if remote:
                return remote
        return self.cursor_at or self.start_at or None

    def _cut_batches(self, domain, skip_unchanged):
        """Batches of items (an Odoo id, or ("deleted", external id)) by count and bytes.

        Reads the changed ids a chunk at a time in id order, renders them to measure and to
        compare with the digest last sent; only ids are kept."""
        Model = self._model()
        Binding = self.env["integration.binding"].sudo()
        limit = min(self.batch_size, self.remote_max_batch or self.batch_size)
        batches, current, size = [], [], 2
        last_id = 0

        def add(item, item_size):
            nonlocal current, size
            if current and (len(current) >= limit or size + item_size + 1 > self.max_payload_bytes):
                batches.append(current)
                current, size = [], 2
            current.append(item)
            size += item_size + 1

        while True:
            records = Model.search(domain + [("id", ">", last_id)], order="id", limit=PLAN_CHUNK)
            if not records:
                break
            last_id = records[-1].id
            digests = {}
            if skip_unchanged:
                digests = {
                    row["res_id"]: row["payload_hash"]
                    for row in Binding.search_read(
                        [
                            ("connector_id", "=", self.connector_id.id),
                            ("res_model", "=", self.model_name),
                            ("res_id", "in", records.ids),
                            ("is_deleted", "=", False),
                        ],
                        ["res_id", "payload_hash"],
                    )
                }
            for record, document in self._render(records):
                if skip_unchanged and digests.get(record.id) == payload_digest(document):
                    continue
                add(record.id, _json_size(document))
            records.invalidate_recordset()  # keep the cache (and memory) to one chunk
        if self.send_deletes:
            for binding in Binding.with_context(active_test=False).search(
                [
                    ("connector_id", "=", self.connector_id.id),
                    ("res_model", "=", self.model_name),
                    ("is_deleted", "=", True),
                ],
                order="id",
            ):
                add(("deleted", binding.external_id), _json_size(self._tombstone(binding.external_id)))
        if current:
            batches.append(current)
        return batches

    # One batch ------------------------------------------------------------------------------

    def _export_batch(self, run):
        """Job body of a batch run."""
        try:
            if self.export_protocol == "messages":
                return self._export_messages(run)
            if run.remote_job_id:
                return self._poll_batch(run)
            return self._send_batch(run)
        except (UserError, MappingError, SyncPageError, IntegrationError) as exc:
            run._fail(exc)
            self._after_batch(run)
            return self.env._("Batch failed: %s", exc)

    def _batch_documents(self, run):
        """[(key, document)] of the batch: one per planned id, in order, then its tombstones.

        A record deleted since the Sync keeps its place, so that a resumed run cuts the
        same messages: as its tombstone when it is bound (and the flow sends deletes), else
        as nothing to send (``document`` None). ``key`` is the Odoo id, or
        ``deleted:<external id>`` for a tombstone."""
        Model = self._model()
        res_ids = run._res_ids()
        records = Model.browse(res_ids).exists()
        rendered = {record.id: document for record, document in self._render(records)}
        gone = [res_id for res_id in res_ids if res_id not in rendered]
        external = {}
        if gone and self.send_deletes:
            external = {
                binding.res_id: binding.external_id
                for binding in self.env["integration.binding"]
                .sudo()
                .with_context(active_test=False)
                .search(
                    [
                        ("connector_id", "=", self.connector_id.id),
                        ("res_model", "=", self.model_name),
                        ("res_id", "in", gone),
                    ]
                )
            }
        items = []
        for res_id in res_ids:
            if res_id in rendered:
                items.append((res_id, rendered[res_id]))
            elif res_id in external:
                items.append((f"deleted:{external[res_id]}", self._tombstone(external[res_id])))
            else:
                items.append((res_id, None))
        in_place = set(external.values())
        items += [
            (f"deleted:{external_id}", self._tombstone(external_id))
            for external_id in run._deleted_ids()
            if external_id not in in_place
        ]
        return items

    def _check_duplicates(self, items):
        """Refuse a batch that holds one remote id twice (a render hook, or a binding's
        external id equal to another record's Odoo id): the remote would keep one of them.
        Ids are compared as text, as the remote may read 12 and "12" as one id."""
        seen, repeated = set(), set()
        for _key, document in items:
            if document is None:
                continue
            remote_id = str(json_path_get(document, self.remote_id_json_path))
            if remote_id in seen:
                repeated.add(remote_id)
            seen.add(remote_id)
        if repeated:
            raise SyncPageError(
                self.env._(
                    "The batch holds the same %(key)s more than once (%(ids)s): not sent.",
                    key=self.remote_id_json_path,
                    ids=", ".join(sorted(repeated)[:10]),
                )
            )

    def _send_batch(self, run):
        items = [(key, document) for key, document in self._batch_documents(run) if document is not None]
        self._check_duplicates(items)
        run._checkpoint(
            state="running",
            started_at=run.started_at or fields.Datetime.now(),
            sent_digests_json=json.dumps({str(key): payload_digest(doc) for key, doc in items}),
        )
        response = self._post_json(
            self.remote_path,
            [document for _key, document in items],
            f"{self.code}: {run.name} ({len(items)} records)",
        )
        body = loads_or_none(response.content)
        job_id = (
            json_path_get(body, self.job_id_json_path) if isinstance(body, dict) and self.job_id_json_path else None
        )
        if job_id in (None, ""):
            # Accepted at once: every item went through.
            with run._own_transaction() as sent:
                sent.write({"sent_count": len(items)})
                sent.flow_id._settle(sent, {}, final_state="done")
            self._after_batch(run)
            return self.env._("Sent %s record(s).", len(items))
        run._checkpoint(remote_job_id=str(job_id), sent_count=len(items), poll_count=0)
        self._schedule_poll(run, 0)
        return self.env._("Sent %(count)s record(s): remote job %(job)s, polled.", count=len(items), job=job_id)
