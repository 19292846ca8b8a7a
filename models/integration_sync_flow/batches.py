import json

from odoo import fields, models
from odoo.exceptions import UserError

from ...core.exceptions import SyncPageError
from ...core.jsonpath import json_path_get
from ...core.jsonutil import compact_bytes, loads_or_none
from ...core.textsafe import unique_key

# Job states a polled remote job ends in (compared case-insensitively).
FINAL_SUCCESS = ("succeeded", "success", "completed", "done", "finished")
FINAL_PARTIAL = ("partiallysucceeded", "partial", "partially_succeeded", "completedwitherrors")
FINAL_FAILED = ("failed", "error", "cancelled", "canceled")
POLL_CAP_SECONDS = 300


class IntegrationSyncFlow(models.Model):
    """A sent batch followed up: its remote job polled (a delayed job, backing off) to a final
    state, its outcome settled on bindings, runs and the error log, the next batch queued."""

    _inherit = "integration.sync.flow"

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

    def _post_json(self, path, body, operation):
        """POST ``body`` as the bytes it was measured by; a body above Max Bytes (one record
        larger than the limit) is refused here, readably, rather than by the remote."""
        data = compact_bytes(body)
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
