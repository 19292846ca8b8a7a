import json

from odoo import fields, models

from ...core.exceptions import SyncPageError
from ...core.jsonutil import loads_or_none, payload_digest
from ...core.mapper import remote_value
from .exporting import _json_size


class IntegrationSyncFlow(models.Model):
    """The numbered-messages protocol (the data-sharing feed): messages numbered from 1 in a
    batch, checkpointed one by one, then one summary."""

    _inherit = "integration.sync.flow"

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
            "timestampStart": remote_value(run.window_start or run.window_end, "datetime"),
            "timestampEnd": remote_value(run.window_end, "datetime"),
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
