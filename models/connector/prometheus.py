import time
from datetime import timedelta

from odoo import api, models

from ...core.prometheus import Family
from ..integration_connector_metric import LATENCY_BUCKETS_MS, OUTCOMES, flush_counts
from ..integration_connector_state import state_cursor
from ..integration_sync_run import STATES as RUN_STATES
from ..webhook_event.processing import WAITING_STATES

# Numbers of the states, for gauges that alert rules compare (documented in the README).
CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_STATUS_VALUES = {"unknown": 0, "ok": 1, "warning": 2, "error": 3}
# The record counts of a sync run, by the ``result`` label they get.
SYNC_RECORD_COUNTS = {
    "fetched": "fetched_count",
    "created": "created_count",
    "updated": "updated_count",
    "unchanged": "unchanged_count",
    "deleted": "deleted_count",
    "failed": "failed_count",
    "sent": "sent_count",
}
ALERT_OPEN_STATES = ("open", "acknowledged")
# Every label name the exposition uses: values are connector and flow codes (constrained
# slugs) or members of fixed sets, so the number of series follows connectors and flows,
# never events, calls or records.
LABEL_NAMES = frozenset({"connector", "flow", "outcome", "state", "result", "le"})

# Sums of the hourly buckets per connector, in this order: one per outcome, the latency sum
# (ms), one per histogram bucket, then the time of the latest success (merged by max).
_SUMS = (
    [f"SUM({outcome})" for outcome in OUTCOMES]
    + ["SUM(latency_sum_ms)"]
    + [f"SUM(histogram[{index}])" for index in range(1, len(LATENCY_BUCKETS_MS) + 2)]
    + ["MAX(last_ok_at)"]
)
_SUMS_QUERY = f"""SELECT connector_id, {", ".join(_SUMS)} FROM integration_connector_metric
                   WHERE hour >= %s AND hour < %s GROUP BY connector_id"""  # noqa: S608 - constants

# Buckets of hours closed for over an hour never change again (a call is counted in the hour
# its statement runs, and no statement runs that long). Each process keeps their sums per
# database: a scrape reads only the hours closed since its previous scrape (usually none)
# and the last two hours, through the index on ``hour``, whatever the history kept. The first
# scrape of a process reads every bucket once (tens of ms for 100 connectors and 30 days).
_closed_hours = {}  # dbname -> (sums up to this hour, excluded; {connector id: [sums]})


def forget_closed_hours():
    """Drop every process's cached sums of closed hours (tests that write past buckets)."""
    _closed_hours.clear()


def _merge(totals, rows):
    merged = dict(totals)
    for connector_id, *sums in rows:
        previous = merged.get(connector_id)
        if previous is None:
            merged[connector_id] = [
                value if value is not None else (None if i == len(sums) - 1 else 0) for i, value in enumerate(sums)
            ]
            continue
        *counts, last_ok = previous
        merged[connector_id] = [a + (b or 0) for a, b in zip(counts, sums[:-1], strict=True)] + [
            max(filter(None, (last_ok, sums[-1])), default=None)
        ]
    return merged


def _bucket_totals(state_cr):
    """({connector id: [sums]} over every bucket kept, database time now)."""
    state_cr.execute("SELECT now() AT TIME ZONE 'UTC'")
    (now,) = state_cr.fetchone()
    until = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    dbname = state_cr.connection.info.dbname
    cached_until, totals = _closed_hours.get(dbname, (None, {}))
    if cached_until is None or until > cached_until:
        state_cr.execute(_SUMS_QUERY, ["-infinity" if cached_until is None else cached_until, until])
        totals = _merge(totals, state_cr.fetchall())
        _closed_hours[dbname] = (until, totals)  # one assignment: a concurrent thread computes the same
        cached_until = until
    state_cr.execute(_SUMS_QUERY, [cached_until, "infinity"])
    return _merge(totals, state_cr.fetchall()), now


class IntegrationConnector(models.Model):
    """Prometheus: the figures of ``GET /integration/metrics``, from a handful of aggregate
    queries over every active connector at once (never a query per connector).

    The hourly buckets and the breaker state are read on the shared-state connection that
    writes them (so a scrape sees calls committed a moment ago, as the connector form does);
    everything else on the request's cursor. Extend ``_prometheus_families`` (call
    ``super()`` and append families) to publish figures of a connector kind.
    """

    _inherit = "integration.connector"

    @api.model
    def _prometheus_families(self):
        """The families of one scrape (``core.prometheus.Family``), for every active connector."""
        started = time.perf_counter()
        cr = self.env.cr
        for model, names in (
            ("integration.connector", ["code", "active", "health_status"]),
            ("integration.webhook.event", ["connector_id", "state"]),
            ("integration.sync.flow", ["connector_id", "code", "active"]),
            ("integration.sync.run", ["flow_id", "state", *SYNC_RECORD_COUNTS.values()]),
        ):
            self.env[model].flush_model(names)
        cr.execute("SELECT id, code, health_status FROM integration_connector WHERE active ORDER BY code")
        connectors = cr.fetchall()
        codes = {connector_id: code for connector_id, code, _status in connectors}
        ids = list(codes)

        flush_counts(timeout=0.5)  # this process's latest calls included
        with state_cursor(cr.dbname) as state_cr:
            buckets, now = _bucket_totals(state_cr)
            state_cr.execute(
                "SELECT connector_id, circuit_state FROM integration_connector_state WHERE connector_id = ANY(%s)",
                [ids],
            )
            circuits = dict(state_cr.fetchall())

        cr.execute(
            """SELECT connector_id, COUNT(*) FILTER (WHERE state IN %s), COUNT(*) FILTER (WHERE state = 'failed')
                 FROM integration_webhook_event
                WHERE state IN %s
             GROUP BY connector_id""",
            [WAITING_STATES, (*WAITING_STATES, "failed")],
        )
        events = {connector_id: (waiting, failed) for connector_id, waiting, failed in cr.fetchall()}
        jobs = self.browse(ids)._job_figures()
        cr.execute(
            f"""SELECT f.connector_id, f.code, r.state, COUNT(r.id),
                       {", ".join(f"COALESCE(SUM(r.{column}), 0)" for column in SYNC_RECORD_COUNTS.values())}
                  FROM integration_sync_flow f
                  LEFT JOIN integration_sync_run r ON r.flow_id = f.id
                 WHERE f.active AND f.connector_id = ANY(%s)
              GROUP BY f.connector_id, f.code, r.state
              ORDER BY f.connector_id, f.code""",  # noqa: S608 - the columns are the constants above
            [ids],
        )
        flows = {}
        for connector_id, flow_code, state, runs, *records in cr.fetchall():
            flow = flows.setdefault((codes[connector_id], flow_code), {"runs": {}, "records": [0] * len(records)})
            if state:
                flow["runs"][state] = runs
                flow["records"] = [a + b for a, b in zip(flow["records"], records, strict=True)]
        alerts = None
        if "integration.alert" in self.env:
            alerts = {
                connector.id: count
                for connector, count in self.env["integration.alert"]
                .sudo()
                .with_context(active_test=False)
                ._read_group(
                    [("state", "in", ALERT_OPEN_STATES), ("connector_id", "in", ids)], ["connector_id"], ["__count"]
                )
            }

        families = self._prometheus_connector_families(connectors, buckets, now, circuits, events, jobs, alerts)
        families += self._prometheus_flow_families(flows)
        families.append(
            Family(
                "integration_scrape_duration_seconds",
                "Seconds this scrape spent computing the figures above (queries included).",
                "gauge",
            ).add({}, round(time.perf_counter() - started, 6))
        )
        return families

    @api.model
    def _prometheus_connector_families(self, connectors, buckets, now, circuits, events, jobs, alerts):
        calls = Family(
            "integration_calls",
            "Outgoing calls by outcome, from the hourly buckets (refused: circuit open or rate limit exhausted).",
            "counter",
        )
        duration = Family(
            "integration_call_duration_seconds",
            "Duration of outgoing calls, from the hourly buckets' latency histogram.",
            "histogram",
            bounds=tuple(bound / 1000 for bound in LATENCY_BUCKETS_MS),
        )
        circuit = Family("integration_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", "gauge")
        webhooks = Family(
            "integration_webhook_events",
            "Webhook events waiting to be processed (received, queued, processing) or failed.",
            "gauge",
        )
        jobs_failed = Family("integration_jobs_failed", "Failed queue jobs of the connector.", "gauge")
        jobs_stuck = Family(
            "integration_jobs_stuck",
            "Queue jobs of the connector started or enqueued for longer than its Job Stuck After (30 min by default).",
            "gauge",
        )
        last_success = Family(
            "integration_last_success_age_seconds",
            "Seconds since the last successful call (health probes not included). Absent while the connector "
            "never succeeded.",
            "gauge",
        )
        health = Family(
            "integration_health_status", "Stored health status: 0 unknown, 1 ok, 2 warning, 3 error.", "gauge"
        )
        families = [calls, duration, circuit, webhooks, jobs_failed, jobs_stuck, last_success, health]
        if alerts is not None:
            open_alerts = Family("integration_alerts_open", "Alerts open or acknowledged.", "gauge")
            families.append(open_alerts)
        empty = (0,) * len(OUTCOMES) + (0.0,) + (0,) * (len(LATENCY_BUCKETS_MS) + 1) + (None,)
        for connector_id, code, status in connectors:
            labels = {"connector": code}
            row = buckets.get(connector_id, empty)
            counts, latency_ms = row[: len(OUTCOMES)], row[len(OUTCOMES)]
            histogram, last_ok_at = row[len(OUTCOMES) + 1 : -1], row[-1]
            age = max((now - last_ok_at).total_seconds(), 0.0) if last_ok_at else None
            for outcome, count in zip(OUTCOMES, counts, strict=True):
                calls.add({**labels, "outcome": outcome}, int(count or 0))
            duration.add(labels, [int(count or 0) for count in histogram], (latency_ms or 0.0) / 1000)
            circuit.add(labels, CIRCUIT_STATE_VALUES.get(circuits.get(connector_id) or "closed", 0))
            waiting, failed = events.get(connector_id, (0, 0))
            webhooks.add({**labels, "state": "waiting"}, waiting)
            webhooks.add({**labels, "state": "failed"}, failed)
            figures = jobs.get(connector_id, {})
            jobs_failed.add(labels, figures.get("failed", 0))
            jobs_stuck.add(labels, figures.get("stuck", 0))
            if age is not None:
                last_success.add(labels, round(age, 3))
            health.add(labels, HEALTH_STATUS_VALUES.get(status or "unknown", 0))
            if alerts is not None:
                open_alerts.add(labels, alerts.get(connector_id, 0))
        return families

    @api.model
    def _prometheus_flow_families(self, flows):
        runs = Family(
            "integration_sync_runs",
            "Stored sync runs (windows and batches) of each active flow, by state. Old runs are removed by the "
            "flow's retention, so this is a gauge.",
            "gauge",
        )
        records = Family(
            "integration_sync_records",
            "Records counted by the stored runs of each active flow, by result (fetched, created, updated, "
            "unchanged, deleted, failed, sent).",
            "gauge",
        )
        for (connector_code, flow_code), flow in sorted(flows.items()):
            labels = {"connector": connector_code, "flow": flow_code}
            for state, _label in RUN_STATES:
                runs.add({**labels, "state": state}, flow["runs"].get(state, 0))
            for result, count in zip(SYNC_RECORD_COUNTS, flow["records"], strict=True):
                records.add({**labels, "result": result}, int(count))
        return [runs, records]
