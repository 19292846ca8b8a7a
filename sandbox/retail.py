"""The retail portal's ERP API, as the product's documents describe it (PARTNERS.md, section 1).

- Every call carries ``X-API-Key`` (the sandbox's ``api_key``); 100 requests a minute per key,
  over it ``429`` with ``Retry-After`` (the documents give the limit, not the answer).
- ``POST /erp-data/product/batch``: a JSON list of at most 1,000 items, each with an integer
  ``erpId`` (unique in the batch) → ``202 {"jobId": ...}``. Items are upserted by ``erpId``:
  sending one again updates it, never duplicates it. A batch is refused whole (``400``, with
  the reasons) when it is not such a list.
- The job runs at ``items_per_second`` (3 to 5 in the documents; 4 here by default), in
  wall-clock time: ``GET /erp-data/product/batch/<jobId>`` (the documents do not give the
  path) reports ``state`` (Processing, Succeeded, PartiallySucceeded, Failed), ``totalItems``,
  ``successCount``, ``failureCount``, ``duration`` and the failed items' ``errors``.
  An item without a ``description``, or whose ``erpId`` is in ``reject_erp_ids``, fails.
- ``GET /erp-data/product/get-latest-integration`` → ``{"lastDateTime": ...}``, the end of the
  last job with at least one success (``404`` before any, unless ``last_integration`` gives the
  epoch of one before the sandbox started: a portal that has been fed before).
- ``GET /erp-data/integration-history/<entityType>?horas=24``: one summary per batch (total,
  successes, failures, error details), never one line per item.
"""

import argparse
import itertools
import json
import threading
import time
from datetime import datetime, timedelta, timezone

from . import demo
from .server import RateLimit, Reply, SandboxServer, add_fault_arguments, apply_fault_arguments

MAX_BATCH = 1000
RATE_PER_MINUTE = 100


def _iso(epoch):
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RetailSandbox(SandboxServer):
    name = "retail"

    def __init__(
        self,
        port=0,
        api_key=demo.RETAIL_API_KEY,
        items_per_second=4.0,
        rate_per_minute=RATE_PER_MINUTE,
        last_integration=None,
    ):
        super().__init__(port=port)
        self.last_integration = last_integration
        self.api_key = api_key
        self.items_per_second = items_per_second
        self.rate = RateLimit(rate_per_minute, 60.0)
        self.reject_erp_ids = set()
        self.products = {}  # erpId -> item as last accepted
        self.jobs = {}  # jobId -> job dict
        self._job_numbers = itertools.count(1)
        self._jobs_lock = threading.Lock()
        self.stats.update(batches=0, items_received=0, largest_batch=0, largest_batch_bytes=0)

    def route(self, method, path, query, headers, body):
        if headers.get("X-API-Key") != self.api_key:
            return Reply(401, {"error": "unauthorized", "message": "missing or wrong X-API-Key"})
        wait = self.rate.hit(self.api_key)
        if wait is not None:
            return Reply(429, {"error": "too_many_requests"}, {"Retry-After": wait})
        self._finish_due_jobs()
        if path == "/erp-data/product/batch" and method == "POST":
            return self._batch(body)
        if path.startswith("/erp-data/product/batch/") and method == "GET":
            job = self.jobs.get(path.rsplit("/", 1)[-1])
            return Reply(200, self._report(job)) if job else Reply(404, {"error": "not_found"})
        if path == "/erp-data/product/get-latest-integration" and method == "GET":
            finished = [j["finished"] for j in self.jobs.values() if j.get("finished") and j["success"]]
            finished += [self.last_integration] if self.last_integration else []
            if not finished:
                return Reply(404, {"error": "no_integration_yet"})
            return Reply(200, {"lastDateTime": _iso(max(finished))})
        if path.startswith("/erp-data/integration-history") and method == "GET":
            hours = float(query.get("horas") or 24)
            since = time.time() - hours * 3600
            return Reply(200, [self._summary(j) for j in self.jobs.values() if j.get("finished", 0) >= since])
        return Reply(404, {"error": "not_found"})

    def _batch(self, body):
        try:
            items = json.loads(body or b"null")
        except ValueError:
            return Reply(400, {"error": "bad_request", "message": "the body is not JSON"})
        problems = []
        if not isinstance(items, list) or not items:
            problems.append("the body must be a non-empty JSON list of items")
        elif len(items) > MAX_BATCH:
            problems.append(f"at most {MAX_BATCH} items per batch, got {len(items)}")
        else:
            seen = set()
            for index, item in enumerate(items):
                erp_id = item.get("erpId") if isinstance(item, dict) else None
                if not isinstance(erp_id, int) or isinstance(erp_id, bool):
                    problems.append(f"item {index}: erpId must be an integer")
                elif erp_id in seen:
                    problems.append(f"item {index}: erpId {erp_id} repeated in the batch")
                seen.add(erp_id)
        if problems:
            return Reply(400, {"error": "invalid_batch", "messages": problems[:20]})
        with self._jobs_lock:
            job_id = f"hangfire-job-{next(self._job_numbers)}"
            now = time.time()
            self.jobs[job_id] = {
                "jobId": job_id,
                "items": items,
                "received": now,
                "due": now + len(items) / self.items_per_second,
            }
        self.count("batches")
        self.count("items_received", len(items))
        with self._lock:
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
            self.stats["largest_batch_bytes"] = max(self.stats["largest_batch_bytes"], len(body))
        return Reply(202, {"jobId": job_id})

    def _finish_due_jobs(self):
        now = time.time()
        with self._jobs_lock:
            for job in self.jobs.values():
                if job.get("finished") or job["due"] > now:
                    continue
                errors = []
                for item in job["items"]:
                    if item["erpId"] in self.reject_erp_ids:
                        errors.append({"erpId": item["erpId"], "message": "refused by the portal"})
                    elif not item.get("description"):
                        errors.append({"erpId": item["erpId"], "message": "description is required"})
                    else:
                        self.products[item["erpId"]] = item  # an upsert: never a second copy
                job.update(finished=job["due"], errors=errors, success=len(job["items"]) - len(errors))

    def _report(self, job):
        total = len(job["items"])
        if not job.get("finished"):
            return {"jobId": job["jobId"], "state": "Processing", "totalItems": total}
        failures = len(job["errors"])
        state = "Succeeded" if not failures else ("Failed" if failures == total else "PartiallySucceeded")
        return {
            "jobId": job["jobId"],
            "state": state,
            "totalItems": total,
            "successCount": total - failures,
            "failureCount": failures,
            "duration": str(timedelta(seconds=round(job["finished"] - job["received"], 3))),
            "errors": job["errors"],
        }

    def _summary(self, job):
        report = self._report(job)
        return {
            "jobId": job["jobId"],
            "dateTime": _iso(job["finished"]),
            "success": report["failureCount"] == 0,
            "total": report["totalItems"],
            "successCount": report["successCount"],
            "failureCount": report["failureCount"],
            "errors": report["errors"],
        }


def main():
    parser = argparse.ArgumentParser(description="The retail portal sandbox, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=demo.PORTS["retail"])
    parser.add_argument("--api-key", default=demo.RETAIL_API_KEY)
    parser.add_argument("--rate", type=int, default=RATE_PER_MINUTE, help="requests a minute per key (0: no limit)")
    parser.add_argument("--items-per-second", type=float, default=4.0, help="the portal's processing speed")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="as scripts/run's demo wants it (sandbox/demo.py): fed before, a day ago",
    )
    add_fault_arguments(parser)
    args = parser.parse_args()
    sandbox = RetailSandbox(
        port=args.port,
        api_key=args.api_key,
        rate_per_minute=args.rate,
        items_per_second=args.items_per_second,
        last_integration=time.time() - demo.RETAIL_FED_HOURS_AGO * 3600 if args.demo else None,
    )
    apply_fault_arguments(sandbox, args).serve()


if __name__ == "__main__":
    main()
