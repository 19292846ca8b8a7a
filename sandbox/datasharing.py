"""The ERP data-sharing feed (PARTNERS.md, section 3), over HTTP JSON: the gRPC messages
``Table`` / ``BatchSummary`` as JSON bodies (the gRPC transport comes with issue 14).

- ``GET /registry`` (no auth): the service registry, naming the token and entities URLs.
- ``POST /connect/token``: client credentials (form body or HTTP Basic) → a bearer token.
- ``GET /api/carol-definitions/v1/entities/RM`` with ``x-upload-version: 1`` or ``2``: the
  tables to send, each with its ``filter`` and ``forceReload``. A table's ``forceReload``
  clears once a batch holding a base load of it was summarised successfully.
- ``POST /tablestream/write``: one ``Table`` message. Checked: the bearer token; at most 200
  rows and 5 MB; ``recordCount`` equal to the rows; every value a string; ``messageNumber``
  from 1 in each ``batchId``, rising by 1. A message sent again with the same number and the
  same content is a retry (accepted, counted); a number reused for other content is a repeat,
  and a number past the next one a gap: both refused (``success: false`` with the reason).
- ``POST /tablestream/summary``: one ``BatchSummary``; succeeds only when its message and
  record counts are those received for the batch (else the lost messages are named), once.
"""

import argparse
import base64
import hashlib
import json
import secrets
import threading
from urllib.parse import parse_qs

from . import demo
from .server import Reply, SandboxServer, add_fault_arguments, apply_fault_arguments

MAX_ROWS = 200
MAX_BYTES = 5 * 1024 * 1024
ENTITIES_PATH = "/api/carol-definitions/v1/entities/RM"


class DataSharingSandbox(SandboxServer):
    name = "datasharing"

    def __init__(
        self, port=0, client_id=demo.DATASHARING_CLIENT_ID, client_secret=demo.DATASHARING_CLIENT_SECRET, tables=None
    ):
        super().__init__(port=port)
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = set()
        self.tables = tables or [
            {"table": "TMOV", "filter": "TMOV.DATAMOVIMENTO > '2025-01-01'", "forceReload": True},
            {"table": "FLAN", "filter": "FLAN.IDLAN > 1000", "forceReload": False},
        ]
        self.batches = {}  # batchId -> {"messages": {number: digest}, "records": n, "base_tables": set, ...}
        self._batch_lock = threading.Lock()
        self.stats.update(
            messages=0, records=0, deleted_rows=0, retries=0, repeats=0, gaps=0, summaries_ok=0, summaries_refused=0
        )

    def route(self, method, path, query, headers, body):
        if path == "/registry" and method == "GET":
            return Reply(200, self._registry())
        if path == "/connect/token" and method == "POST":
            return self._token(headers, body)
        if (headers.get("Authorization") or "").removeprefix("Bearer ") not in self.tokens:
            return Reply(401, {"error": "invalid_token"})
        if path == ENTITIES_PATH and method == "GET":
            version = headers.get("x-upload-version")
            if version not in ("1", "2"):
                return Reply(400, {"error": "bad_request", "message": "x-upload-version must be 1 or 2"})
            queries = [dict(t, isNative=True, isCustom=False, metadata=None) for t in self.tables]
            return Reply(200, {"uploadVersion": int(version), "queries": queries})
        if path == "/tablestream/write" and method == "POST":
            if len(body) > MAX_BYTES:
                return Reply(413, {"success": False, "errors": [f"a message may not exceed {MAX_BYTES} bytes"]})
            return self._write(json.loads(body or b"{}"), body)
        if path == "/tablestream/summary" and method == "POST":
            return self._summary(json.loads(body or b"{}"))
        return Reply(404, {"error": "not_found"})

    def _registry(self):
        return [
            {"service": "rac-token", "endpoints": [{"version": "1", "address": f"{self.url}/connect/token"}]},
            {
                "service": "provisioning-carol-definitions-entities",
                "endpoints": [{"version": "1", "address": f"{self.url}{ENTITIES_PATH}"}],
            },
        ]

    def _token(self, headers, body):
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            client_id, _colon, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return Reply(401, {"error": "invalid_client"})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _write(self, table, raw):
        errors = []
        rows = table.get("rows") or []
        if len(rows) > MAX_ROWS:
            errors.append(f"at most {MAX_ROWS} records per message, got {len(rows)}")
        if table.get("recordCount") != len(rows):
            errors.append(f"recordCount {table.get('recordCount')} but {len(rows)} rows")
        values = [column.get("value") for row in rows for column in row.get("columns") or []]
        if any(not isinstance(value, str) for value in values):
            errors.append("every value travels as a string")
        batch_id, number = table.get("batchId"), table.get("messageNumber")
        if not isinstance(batch_id, int) or not isinstance(number, int) or number < 1:
            errors.append("batchId and messageNumber (from 1) are integers")
        if errors:
            return Reply(200, {"success": False, "errors": errors})
        digest = hashlib.sha256(raw).hexdigest()
        with self._batch_lock:
            batch = self.batches.setdefault(
                batch_id, {"messages": {}, "records": 0, "base_tables": set(), "summarised": False}
            )
            expected = len(batch["messages"]) + 1
            if number in batch["messages"]:
                if batch["messages"][number] == digest:
                    self.count("retries")
                    return Reply(200, {"success": True, "errors": []})
                self.count("repeats")
                return Reply(200, {"success": False, "errors": [f"message {number} repeated with other content"]})
            if number != expected:
                self.count("gaps")
                return Reply(200, {"success": False, "errors": [f"message {number} out of order: expected {expected}"]})
            batch["messages"][number] = digest
            batch["records"] += len(rows)
            if table.get("isBaseLoad"):
                batch["base_tables"].add(table.get("tableName"))
        deleted = sum(
            1
            for row in rows
            for column in row.get("columns") or []
            if column.get("name") == "DELETED" and column.get("value") == "true"
        )
        self.count("messages")
        self.count("records", len(rows))
        self.count("deleted_rows", deleted)
        return Reply(200, {"success": True, "errors": []})

    def _summary(self, summary):
        with self._batch_lock:
            batch = self.batches.get(summary.get("batchId"))
            errors = []
            if batch is None:
                errors.append("no message was received for this batch")
            elif batch["summarised"]:
                errors.append("this batch was already summarised")
            else:
                received = len(batch["messages"])
                if summary.get("messageCount") != received:
                    errors.append(f"messageCount {summary.get('messageCount')} but {received} messages received")
                if summary.get("recordCount") != batch["records"]:
                    errors.append(f"recordCount {summary.get('recordCount')} but {batch['records']} records received")
                for key in ("timestampStart", "timestampEnd"):
                    if not summary.get(key):
                        errors.append(f"{key} is required")
            if errors:
                self.count("summaries_refused")
                return Reply(200, {"success": False, "errors": errors})
            batch["summarised"] = True
            for table in self.tables:
                if table["table"] in batch["base_tables"]:
                    table["forceReload"] = False  # reloaded: acknowledged
        self.count("summaries_ok")
        return Reply(200, {"success": True, "errors": []})


def main():
    parser = argparse.ArgumentParser(description="The data-sharing feed sandbox (HTTP JSON), on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=demo.PORTS["datasharing"])
    add_fault_arguments(parser)
    args = parser.parse_args()
    apply_fault_arguments(DataSharingSandbox(port=args.port), args).serve()


if __name__ == "__main__":
    main()
