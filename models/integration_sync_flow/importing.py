import logging
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl, quote

import psycopg2
from psycopg2.extras import execute_values

from odoo import fields, models
from odoo.exceptions import UserError, ValidationError

from odoo.addons.queue_job.exception import RetryableJobError

from ...const import LOCK_SYNC_FLOW, PAUSED_RETRY_AFTER
from ...core.exceptions import IntegrationError, MappingError, SyncPageError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import loads_or_none, payload_digest
from ...core.textsafe import unique_key
from ..integration_connector_state import state_cursor
from ..integration_sync_run import WINDOW_COUNTS
from .common import MAX_WINDOWS_PER_PLAN

# Times a window is read again from its first page when its total changes while paged.
MAX_WINDOW_RESTARTS = 3

_logger = logging.getLogger(__name__)

TRUE_TEXTS = ("1", "true", "yes", "y", "s", "sim")


def _is_true(value):
    return value is True or (isinstance(value, int | float) and value == 1) or str(value).strip().lower() in TRUE_TEXTS


class IntegrationSyncFlow(models.Model):
    """Import: windows of the remote's last-change time, pages inside a window.

    ``_plan_import`` cuts cursor..now into windows and queues one run each;
    ``_import_window`` (the run's job) asks the pages, writing each page's records and the
    checkpoint in one transaction of its own; ``_import_documents`` is the upsert shared
    with ``_import_one`` (a webhook's single record).
    """

    _inherit = "integration.sync.flow"

    # Planning ----------------------------------------------------------------------------

    def _plan_import(self, until=None):
        """Queue the windows from the cursor to ``until`` (now by default): one run each, at
        most MAX_WINDOWS_PER_PLAN (a catch-up goes on at the next Sync)."""
        Run = self.env["integration.sync.run"]
        if Run.search_count([("flow_id", "=", self.id), ("state", "in", ("queued", "running"))]):
            # A Sync while windows wait adds nothing: they cover up to when they were planned.
            self._kick_queued_runs()
            return Run
        now = until or fields.Datetime.now().replace(microsecond=0)
        full = self.mode == "full" or self.is_reload_pending
        start = self._import_start(full)
        if start is None:
            # No cursor and no start: one window of the last period
            start = now - timedelta(minutes=self.window_minutes)
        step = timedelta(minutes=self.window_minutes)
        values = []
        while start < now and len(values) < MAX_WINDOWS_PER_PLAN:
            end = min(start + step, now)
            values.append(
                {"flow_id": self.id, "kind": "window", "window_start": start, "window_end": end, "is_base_load": full}
            )
            start = end
        # Unique per Sync: two Syncs in one second are two plans (the cursor follows each).
        plan_ref = f"{fields.Datetime.to_string(now)}#{self.id}#{uuid.uuid4().hex[:12]}"
        runs = Run.create([dict(v, plan_ref=plan_ref) for v in values])
        if full:
            self.is_reload_pending = False
        self._kick_queued_runs()
        return runs

    def _import_start(self, full):
        if full:
            return self.start_at or None
        if self.cursor_source == "remote":
            remote = self._remote_cursor()
            if remote:
                return remote
        return self.cursor_at or self.start_at or None

    def _remote_cursor(self):
        """The starting point the remote keeps (e.g. get-latest-integration), or None."""
        if not self.cursor_remote_path:
            return None
        response = self.connector_id._request(
            "GET", self.cursor_remote_path, raise_for_status=False, operation=f"{self.code}: latest integration"
        )
        if response.status_code != 200:
            return None  # the documented client treats any other answer as "none yet"
        value = json_path_get(loads_or_none(response.content) or {}, self.cursor_remote_json_path or "")
        try:
            return fields.Datetime.to_datetime(str(value).replace("T", " ").replace("Z", "")[:19] if value else None)
        except ValueError:
            return None

    # One window ----------------------------------------------------------------------------

    def _import_window(self, run):
        """Job body of a window run: page after page from its checkpoint to the last page.

        Each page is asked outside any page transaction (only the job's own, which
        queue_job keeps open to lock the job, waits meanwhile), then its records and the
        checkpoint are written together in a transaction of their own: a worker killed
        between pages resumes at the next one, and one killed during a page's write redoes
        that page only.
        """
        with run._own_transaction() as started:
            started.write({"state": "running", "started_at": started.started_at or fields.Datetime.now()})
            position = started._position()
        prepared = self._import_prepared()
        try:
            while True:
                fetched = self._fetch_page(position)
                with run._own_transaction() as page_run:
                    if page_run.state != "running":
                        return self.env._("Stopped: the run is %s.", page_run.state)
                    outcome = page_run.flow_id._store_page(page_run, fetched, prepared)
                    position = page_run._position()
                if outcome == "split":
                    with run._own_transaction() as split_run:
                        split_run.flow_id._kick_queued_runs()  # the second half, if windows run in parallel
                elif outcome == "done":
                    break
        except (UserError, ValidationError, MappingError, SyncPageError, IntegrationError) as exc:
            run._fail(exc)
            with run._own_transaction() as failed_run:
                failed_run.flow_id._kick_queued_runs()  # the next windows go on; the cursor waits
            return self.env._("Window failed: %s", exc)
        except psycopg2.errors.UniqueViolation:
            # Another window imported the same remote record at the same moment: the page
            # was rolled back whole; on the next try its binding exists.
            raise RetryableJobError(self.env._("A record was bound concurrently; page retried."), seconds=2) from None
        return self._finish_window(run)

    def _fetch_page(self, position):
        """Ask the page at ``position`` (a run's ``_position()``); the parsed page."""
        page = position["page"]
        if self.paging_style in ("page", "offset") and page >= self.page_cap:
            raise SyncPageError(
                self.env._(
                    "Window %(window)s: page %(page)s would be beyond the remote's page cap (%(cap)s).",
                    window=position["name"],
                    page=page,
                    cap=self.page_cap,
                )
            )
        params = list(parse_qsl(self.extra_params or "", keep_blank_values=True))
        start = position["window_start"] - timedelta(seconds=self.overlap_seconds)
        params += list(self._window_params(start, position["window_end"]).items())
        if self.paging_style == "page":
            params.append((self.param_page, str(page)))
        elif self.paging_style == "offset":
            params.append((self.param_page, str((page - 1) * self.page_size)))
        elif self.paging_style == "cursor" and position["token"]:
            params.append((self.param_page, position["token"]))
        if self.param_page_size and self.paging_style != "none":
            params.append((self.param_page_size, str(self.page_size)))
        response = self.connector_id._request(
            "GET", self.remote_path, params=params, operation=f"{self.code}: {position['name']} page {page}"
        )
        body = loads_or_none(response.content)
        documents = json_path_get(body, self.records_json_path) if self.records_json_path else body
        if not isinstance(documents, list):
            raise SyncPageError(
                self.env._(
                    "Window %(window)s, page %(page)s: the answer holds no list of records%(where)s.",
                    window=position["name"],
                    page=page,
                    where=self.env._(" at %r", self.records_json_path) if self.records_json_path else "",
                )
            )
        return {"page": page, "documents": documents, "total": self._total(response), "body": body}

    def _store_page(self, run, fetched, prepared=None):
        """Upsert a fetched page and move the checkpoint, in the page's own transaction
        (``run`` belongs to it); "more", "done" or "split"."""
        page, documents, total = fetched["page"], fetched["documents"], fetched["total"]
        if page != run.page_next:
            # Another worker moved this window on meanwhile (a job run twice): drop ours.
            _logger.info("Flow %s: page %s of run %s was stored meanwhile", self.code, page, run.id)
            return "more"
        if page == 1 and total is not None and total > (self.page_cap - 1) * self.page_size:
            self._split_window(run, total)
            return "split"
        if page > 1 and total is not None and run.remote_total and total != run.remote_total:
            if run.restart_count < MAX_WINDOW_RESTARTS:
                # Records entered or left the window while it was paged: the pages shifted,
                # and one record may have fallen between two of them. Read it again from
                # the first page (what was stored is recognised by its binding).
                _logger.info(
                    "Flow %s: window %s went from %s to %s records while paged: read again",
                    self.code,
                    run.name,
                    run.remote_total,
                    total,
                )
                run.write({**dict.fromkeys(WINDOW_COUNTS, 0), "restart_count": run.restart_count + 1, "page_next": 1})
                return "more"
        counts = self._import_documents(documents, run=run, prepared=prepared)
        fetched_count = run.fetched_count + len(documents)
        values = {
            "page_next": page + 1,
            "page_count": run.page_count + 1,
            "remote_total": total if total is not None else run.remote_total,
            "fetched_count": fetched_count,
        }
        for key, amount in counts.items():
            values[key] = run[key] + amount if isinstance(amount, int) else amount
        more = self._has_more(fetched["body"], documents, page, fetched_count, total)
        if self.paging_style == "cursor":
            values["page_token"] = more or False
        if not more and self.paging_style in ("page", "offset") and len(documents) == self.page_size:
            if page + 1 >= self.page_cap and (total is None or fetched_count < total):
                # Full pages up to the cap: the window holds more than the remote lets us page.
                self._split_window(run, total)
                return "split"
        if not more:
            # The final state goes with the last page: a worker killed right after it finds
            # the window finished, not a page to ask beyond the last.
            failed = values.get("failed_count", run.failed_count)
            values.update(state="partial" if failed else "done", finished_at=fields.Datetime.now())
        run.write(values)
        return "more" if more else "done"

    def _total(self, response):
        if not self.total_header:
            return None
        value = response.headers.get(self.total_header)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def _has_more(self, body, documents, page, fetched, total):
        if self.paging_style == "none" or not documents:
            return False
        if self.paging_style == "cursor":
            token = json_path_get(body, self.next_token_json_path) if self.next_token_json_path else None
            return str(token) if token not in (None, "") else False
        if len(documents) < self.page_size:
            return False  # a short page is the last
        if total is not None and page * self.page_size >= total:
            return False  # by position: what was counted before a Retry or a restart decides nothing
        return page + 1 < self.page_cap

    def _split_window(self, run, total):
        """The window holds more than page cap × page size: halve it (the second half becomes a
        new run); this run restarts at page 1 on the first half."""
        middle = run.window_start + (run.window_end - run.window_start) / 2
        middle = middle.replace(microsecond=0)
        if middle <= run.window_start:
            raise SyncPageError(
                self.env._(
                    "Window %(window)s holds %(total)s records, more than the remote pages (%(cap)s pages of "
                    "%(size)s), and cannot be split below a second.",
                    window=run.name,
                    total=total,
                    cap=self.page_cap - 1,
                    size=self.page_size,
                )
            )
        _logger.info(
            "Flow %s: window %s holds %s records (more than %s pages of %s): split at %s",
            self.code,
            run.name,
            total,
            self.page_cap - 1,
            self.page_size,
            middle,
        )
        second = run.copy(
            {
                "window_start": middle,
                "window_end": run.window_end,
                **dict.fromkeys(WINDOW_COUNTS, 0),
                "state": "queued",
                "job_uuid": False,
                "page_next": 1,
                "page_token": False,
                "started_at": False,
            }
        )
        # Both halves count from their first page (pages already stored are recognised).
        run.write({**dict.fromkeys(WINDOW_COUNTS, 0), "window_end": middle, "page_next": 1, "page_token": False})
        _logger.debug("Flow %s: second half of the window is run %s", self.code, second.id)
        return True

    def _finish_window(self, run):
        """The window ended (its state went with its last page): cursor, queue, summary."""
        self._after_window(run)
        with run._own_transaction() as done_run:
            state = done_run.state
            summary = self.env._(
                "%(state)s: %(pages)s page(s), %(fetched)s fetched, %(created)s created, %(updated)s updated, "
                "%(unchanged)s unchanged, %(deleted)s deleted, %(failed)s failed",
                state=state,
                pages=done_run.page_count,
                fetched=done_run.fetched_count,
                created=done_run.created_count,
                updated=done_run.updated_count,
                unchanged=done_run.unchanged_count,
                deleted=done_run.deleted_count,
                failed=done_run.failed_count,
            )
        return summary

    def _after_window(self, run):
        """Move the cursor over the plan's done windows and queue the next ones, one window
        at a time per flow: under the flow's lock, taken before the transaction starts so
        that it sees what the window before it committed (parallel windows end together)."""
        with state_cursor(self.env.cr.dbname) as lock_cr:
            lock_cr.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_SYNC_FLOW, self.id])
            try:
                with run._own_transaction() as ended:
                    ended.flow_id._advance_import_cursor(ended.plan_ref)
                    ended.flow_id._kick_queued_runs()
            finally:
                lock_cr.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_SYNC_FLOW, self.id])

    def _advance_import_cursor(self, plan_ref):
        """Move the cursor over the done windows that follow it, without gaps: a failed or
        partial window holds it (the next Sync reads from there again)."""
        cursor = self.cursor_at
        runs = self.env["integration.sync.run"].search(
            [("flow_id", "=", self.id), ("kind", "=", "window"), ("plan_ref", "=", plan_ref)],
            order="window_start, id",
        )
        for run in runs:
            if cursor and run.window_end <= cursor:
                continue
            if cursor and run.window_start > cursor:
                break  # a gap (a window removed): stop
            if run.state != "done":
                break
            cursor = run.window_end
        if cursor and cursor != self.cursor_at:
            self.cursor_at = cursor

    # Upsert, shared by windows and single records -------------------------------------------

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
