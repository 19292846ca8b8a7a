import json
import logging
import uuid
from datetime import datetime, timedelta

from odoo import fields, models
from odoo.exceptions import UserError

from ...core.exceptions import IntegrationError, MappingError, SyncPageError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import loads_or_none, payload_digest
from ...core.mapper import remote_value
from ...core.textsafe import unique_key

_logger = logging.getLogger(__name__)

# Ids read per query while planning an export (the records themselves are never all in memory).
PLAN_CHUNK = 2000
# Job states a polled remote job ends in (compared case-insensitively).
FINAL_SUCCESS = ("succeeded", "success", "completed", "done", "finished")
FINAL_PARTIAL = ("partiallysucceeded", "partial", "partially_succeeded", "completedwitherrors")
FINAL_FAILED = ("failed", "error", "cancelled", "canceled")
POLL_CAP_SECONDS = 300


def _json_bytes(document):
    """The body as it travels: compact UTF-8 JSON (``requests``' own ``json=`` adds spaces and
    escapes non-ASCII text, up to six bytes a character: batches measured on this form would
    travel larger than measured)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _json_size(document):
    return len(_json_bytes(document))


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

    def _schedule_poll(self, run, polls):
        delay = min(self.poll_interval * (2 ** min(polls, 10)), POLL_CAP_SECONDS)
        with run._own_transaction() as polled:
            job = self._delay(
                polled.sudo(),
                self.env._("%(connector)s: poll %(run)s", connector=self.connector_id.name, run=polled.name),
                eta=delay,
            )._job_run()
            polled.job_uuid = job.uuid

    def _poll_batch(self, run):
        path = (self.job_status_path or "").replace("{job_id}", run.remote_job_id)
        if not path:
            raise UserError(self.env._("Flow %s has no Job Status Path to poll.", self.name))
        response = self.connector_id._request("GET", path, operation=f"{self.code}: poll {run.remote_job_id}")
        report = loads_or_none(response.content)
        state = str(json_path_get(report, self.job_state_json_path or "state") or "").lower().replace(" ", "")
        final = (
            "done"
            if state in FINAL_SUCCESS
            else "partial"
            if state in FINAL_PARTIAL
            else "failed"
            if state in FINAL_FAILED
            else None
        )
        if final is None:
            waited = (fields.Datetime.now() - (run.started_at or fields.Datetime.now())).total_seconds()
            if waited > self.poll_max_minutes * 60:
                raise SyncPageError(
                    self.env._(
                        "Remote job %(job)s still %(state)s after %(minutes)s minutes: gave up polling.",
                        job=run.remote_job_id,
                        state=state or "without a state",
                        minutes=self.poll_max_minutes,
                    )
                )
            polls = run.poll_count + 1
            run._checkpoint(poll_count=polls)
            self._schedule_poll(run, polls)  # (run.poll_count, read before, is not the checkpoint's)
            return self.env._("Remote job %(job)s: %(state)s.", job=run.remote_job_id, state=state)
        item_errors = {}
        for entry in json_path_get(report, self.job_errors_json_path or "errors") or []:
            if isinstance(entry, dict):
                key = entry.get(self.remote_id_json_path)
                message = entry.get("message") or entry.get("error") or json.dumps(entry)[:300]
                item_errors[str(key)] = str(message)[:500]
        with run._own_transaction() as settled:
            settled.flow_id._settle(settled, item_errors, final_state=final, report=report)
        self._after_batch(run)
        return self.env._("Remote job %(job)s: %(state)s.", job=run.remote_job_id, state=final)

    def _settle(self, run, item_errors, final_state, report=None):
        """Record a batch's outcome: bindings of what went through, last errors of what did
        not (one grouped entry in the error log), the run's counts and state."""
        digests = json.loads(run.sent_digests_json or "{}")
        Binding = self.env["integration.binding"]
        Model = self._model()
        failed = 0
        now = fields.Datetime.now()
        errors = []
        for key, digest in digests.items():
            if key.startswith("deleted:"):
                external_id = key.removeprefix("deleted:")
                error = item_errors.get(external_id)
                tombstone = (
                    Binding.sudo()
                    .with_context(active_test=False)
                    .search(
                        [
                            ("connector_id", "=", self.connector_id.id),
                            ("res_model", "=", self.model_name),
                            ("external_id", "=", external_id),
                            ("is_deleted", "=", True),
                        ]
                    )
                )
                if error or final_state == "failed":
                    tombstone.write({"last_error": error or final_state})
                    failed += 1
                    errors.append(error or final_state)
                else:
                    tombstone.unlink()  # the remote knows: nothing left to send
                continue
            record = Model.browse(int(key)).exists()
            binding = Binding._find(self.connector_id, self.model_name, res_id=int(key))
            external = binding.external_id if binding else None
            error = item_errors.get(key) or (external and item_errors.get(external))
            if error or final_state == "failed":
                failed += 1
                errors.append(error or final_state)
                if binding:
                    binding.write({"last_error": error or final_state, "payload_hash": False})
                elif record:
                    Binding._bind(self.connector_id, record, self._remote_id(record.id)).write(
                        {"last_error": error or final_state, "payload_hash": False}
                    )
                continue
            if not record:
                # Taken by the remote, deleted here before the outcome came: its delete goes next.
                self._leave_tombstone(int(key), binding)
                continue
            binding = Binding._bind(self.connector_id, record, external or str(self._remote_id(record.id)))
            # No digest: what was sent is not known (an earlier attempt's message), so an
            # unchanged record is not taken for sent; a changed one goes again.
            binding.write({"payload_hash": digest or False, "sync_date": now})
        if final_state == "done" and failed:
            final_state = "partial"
        values = {"state": final_state, "failed_count": failed, "finished_at": now}
        if report is not None and isinstance(report, dict):
            values["sent_count"] = report.get("totalItems") or run.sent_count
        if errors:
            values["error"] = run._add_errors(errors)
            self.connector_id.env["integration.error"]._record(
                self.connector_id,
                {
                    "operation": f"{self.code}: {run.name}",
                    "error_class": "SyncItemsRefused",
                    "is_retryable": True,
                    "message": self.env._(
                        "%(failed)s of %(total)s record(s) refused by the remote:\n%(errors)s",
                        failed=failed,
                        total=len(digests),
                        errors=values["error"],
                    ),
                    "res_model": run._name,
                    "res_id": run.id,
                },
                same_transaction=True,
            )
        run.write(values)

    def _leave_tombstone(self, res_id, binding):
        """The remote holds the record ``res_id`` that is gone here: a tombstone, so that
        the next export sends its delete (when the flow sends deletes)."""
        if not self.send_deletes:
            return
        if binding:
            binding.write({"is_deleted": True})
            return
        external_id = unique_key(str(self._remote_id(res_id)))
        if self.env["integration.binding"]._find(self.connector_id, self.model_name, external_id=external_id):
            return  # the id is another record's now: nothing of this one to delete
        self.env["integration.binding"].sudo().create(
            {
                "connector_id": self.connector_id.id,
                "res_model": self.model_name,
                "res_id": res_id,
                "external_id": external_id,
                "is_deleted": True,
                "sync_date": fields.Datetime.now(),
            }
        )

    def _after_batch(self, run):
        """A batch ended: move the cursor when its whole plan went through, queue the next."""
        with run._own_transaction() as ended:
            flow = ended.flow_id
            flow.env.cr.execute("SELECT id FROM integration_sync_flow WHERE id = %s FOR UPDATE", [flow.id])
            plan = ended.search([("flow_id", "=", flow.id), ("plan_ref", "=", ended.plan_ref)])
            if plan and all(r.state in ("done", "partial") for r in plan) and ended.plan_until:
                if not flow.cursor_at or flow.cursor_at < ended.plan_until:
                    flow.cursor_at = ended.plan_until
            flow._kick_queued_runs()

    # Numbered messages and a summary ---------------------------------------------------------

    def _export_messages(self, run):
        """Send the batch as messages numbered from 1 (a resumed run goes on from the last one
        acknowledged, a retried message keeps its number and content), then the summary."""
        run._checkpoint(state="running", started_at=run.started_at or fields.Datetime.now())
        items = self._batch_documents(run)
        self._check_duplicates(items)
        table = self.table_name or self.code
        primary_key = self.primary_key_json_path or self.remote_id_json_path
        # One schema for the batch (tombstones carry fewer columns than records): a message
        # sent again is the same message.
        columns = list(dict.fromkeys(name for _key, document in items if document is not None for name in document))

        def message_of(rows, number):
            return {
                "tableName": table,
                "erp": self.erp_name or "",
                "rows": rows,
                "schema": {
                    "flexible": True,
                    "exportData": True,
                    "columns": [{"name": name, "type": "string"} for name in columns],
                    "primaryKey": {"name": f"PK_{table}", "columns": [primary_key]},
                },
                "batchId": int(run.batch_ref),
                "messageNumber": number,
                "recordCount": len(rows) if rows else self.message_size,
                "isBaseLoad": run.is_base_load,
            }

        # ``position`` counts items (records_sent), ``records`` rows sent (the summary's count).
        position, number, records = run.records_sent, run.message_count + 1, run.sent_count
        # What the batch sent, for the bindings: an earlier attempt's records without a digest
        # (they may have changed since), tombstones as such, this attempt's with theirs.
        res_ids = run._res_ids()
        digests = {str(res_id): None for res_id in res_ids[:position]}
        digests.update({str(key): None for key, _document in items[len(res_ids) : position]})
        while position < len(items):
            # The message without rows, counts at their widest: what the rows may add to.
            size = _json_size(message_of([], number))
            rows, taken = [], 0
            for key, document in items[position:]:
                if document is None:  # deleted before it was ever sent
                    taken += 1
                    continue
                row = {"columns": [{"name": k, "value": _as_text(v)} for k, v in document.items()]}
                row_size = _json_size(row) + (1 if rows else 0)
                if rows and (len(rows) >= self.message_size or size + row_size > self.max_payload_bytes):
                    break
                rows.append(row)
                size += row_size
                taken += 1
                digests[str(key)] = payload_digest(document)
            if not rows:
                position += taken  # only records deleted meanwhile were left
                run._checkpoint(records_sent=position)
                continue
            message = message_of(rows, number)
            answer = self._post_protocol(self.remote_path, message, f"{self.code}: {run.name} message {number}")
            if not answer.get("success"):
                raise SyncPageError(
                    self.env._(
                        "Message %(number)s of batch %(batch)s refused: %(errors)s",
                        number=number,
                        batch=run.batch_ref,
                        errors="; ".join(map(str, answer.get("errors") or [])) or "no reason given",
                    )
                )
            position += taken
            records += len(rows)
            run._checkpoint(records_sent=position, message_count=number, sent_count=records)
            number += 1
        if not records:
            # Every record of the batch was deleted before it was sent: no message, so nothing
            # to summarise (a receiver refuses the summary of a batch it never saw).
            with run._own_transaction() as ended:
                ended.write({"sent_digests_json": json.dumps(digests)})
                ended.flow_id._settle(ended, {}, final_state="done")
            self._after_batch(run)
            return self.env._("Batch %s: nothing left to send.", run.batch_ref)
        summary = {
            "erp": self.erp_name or "",
            "batchId": int(run.batch_ref),
            "messageCount": number - 1,
            "recordCount": records,
            "timestampStart": _iso(run.window_start or run.window_end),
            "timestampEnd": _iso(run.window_end),
        }
        answer = self._post_protocol(self.summary_path, summary, f"{self.code}: {run.name} summary")
        if not answer.get("success"):
            # The receiver checks its messages against the summary: refused, the batch is
            # not taken (lost messages), so nothing is bound and the cursor stays.
            raise SyncPageError(
                self.env._(
                    "Summary of batch %(batch)s refused: %(errors)s",
                    batch=run.batch_ref,
                    errors="; ".join(map(str, answer.get("errors") or [])) or "no reason given",
                )
            )
        with run._own_transaction() as ended:
            ended.write({"sent_count": records, "sent_digests_json": json.dumps(digests)})
            ended.flow_id._settle(ended, {}, final_state="done")
        self._after_batch(run)
        return self.env._("Batch %(batch)s: %(count)s message(s).", batch=run.batch_ref, count=number - 1)

    def _post_json(self, path, body, operation):
        """POST ``body`` as the bytes it was measured by; a body above Max Bytes (one record
        larger than the limit) is refused here, readably, rather than by the remote."""
        data = _json_bytes(body)
        if len(data) > self.max_payload_bytes:
            raise SyncPageError(
                self.env._(
                    "%(operation)s: %(size)s bytes, above the maximum of %(max)s (a record too large to send).",
                    operation=operation,
                    size=len(data),
                    max=self.max_payload_bytes,
                )
            )
        return self.connector_id._request(
            "POST", path, data=data, headers={"Content-Type": "application/json"}, operation=operation
        )

    def _post_protocol(self, path, body, operation):
        response = self._post_json(path, body, operation)
        answer = loads_or_none(response.content)
        if not isinstance(answer, dict):
            raise SyncPageError(self.env._("%s: the answer is not a JSON object.", operation))
        return answer


def _as_text(value):
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return remote_value(value, "char", as_string=True)


def _iso(moment):
    if not isinstance(moment, datetime):
        moment = fields.Datetime.to_datetime(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
