import logging
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl

import psycopg2

from odoo import fields, models
from odoo.exceptions import UserError, ValidationError

from odoo.addons.queue_job.exception import RetryableJobError

from ...const import LOCK_SYNC_FLOW
from ...core.exceptions import IntegrationError, MappingError, SyncPageError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import loads_or_none
from ..integration_connector_state import state_cursor
from ..integration_sync_run import WINDOW_COUNTS
from .common import MAX_WINDOWS_PER_PLAN

# Times a window is read again from its first page when its total changes while paged.
MAX_WINDOW_RESTARTS = 3

_logger = logging.getLogger(__name__)


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
        body = loads_or_none(self._page_text(response, position["name"], page))
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

    def _page_text(self, response, window, page):
        """A page's text: UTF-8 (RFC 8259), or the charset its Content-Type names.

        A page that does not decode fails the window: read with replacement characters, its
        names would be imported with them, and a page is not kept to be read again.
        """
        declared = "charset=" in (response.headers.get("Content-Type") or "").lower()
        charset = (response.encoding if declared else None) or "utf-8"
        try:
            return response.content.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            where = (
                self.env._("byte 0x%(byte)02x at position %(position)s", byte=exc.object[exc.start], position=exc.start)
                if isinstance(exc, UnicodeDecodeError)
                else self.env._("an unknown charset")
            )
            raise SyncPageError(
                self.env._(
                    "Window %(window)s, page %(page)s: the answer is not %(charset)s text (%(where)s).",
                    window=window,
                    page=page,
                    charset="UTF-8" if charset.lower().replace("_", "-") in ("utf-8", "utf8") else charset,
                    where=where,
                )
            ) from None

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
