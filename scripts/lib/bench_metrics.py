"""Benchmark of the Prometheus metrics route (run by scripts/bench, part ``metrics``).

A database with CONNECTORS connectors, EVENTS webhook events spread over them (mostly done,
some waiting, some failed: written with INSERT ... SELECT generate_series), hourly metric
buckets over DAYS days for every connector, a sync flow with runs on every other connector,
a few open circuits and failed jobs. Then an Odoo server (2 HTTP workers) is scraped
SCRAPES times over HTTP with the bearer token, one scrape at a time as Prometheus does,
after WARMUP scrapes; p50 and p99 of the whole request as the client sees it.
"""

import hashlib
import os
import statistics
import sys
import time
import urllib.request

# Shared with the webhook benchmark (this script's folder is on sys.path when it runs).
from bench_webhook import OdooServer, env_for

import odoo
from odoo.modules.registry import Registry

CONNECTORS = int(os.environ.get("BENCH_METRICS_CONNECTORS", "100"))
EVENTS = int(os.environ.get("BENCH_METRICS_EVENTS", "1000000"))
DAYS = int(os.environ.get("BENCH_METRICS_DAYS", "30"))
SCRAPES = int(os.environ.get("BENCH_METRICS_SCRAPES", "200"))
WARMUP = 10
RUNS_PER_FLOW = 40
TOKEN = "bench-metrics-token-" + "0123456789abcdef" * 2
TOKEN_PARAM = "integration_hub.metrics_token_sha256"


def populate(db):
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        connectors = env["integration.connector"].create(
            [
                {
                    "name": f"Bench metrics {n:03d}",
                    "code": f"bench-metrics-{n:03d}",
                    "base_url": "https://api.example.com",
                }
                for n in range(CONNECTORS)
            ]
        )
        partner_model = env["ir.model"]._get("res.partner").id
        flows = env["integration.sync.flow"].create(
            [
                {
                    "name": "Orders",
                    "code": "orders",
                    "connector_id": connector.id,
                    "direction": "import",
                    "model_id": partner_model,
                    "remote_path": "/orders",
                    "id_json_path": "id",
                }
                for connector in connectors[::2]
            ]
        )
        env.flush_all()
        ids = connectors.ids
        # Events: 97% done, 1% received, 0.5% queued, 0.5% failed, 1% ignored, round robin
        # over the connectors, received over the last 30 days.
        cr.execute(
            """INSERT INTO integration_webhook_event
                   (connector_id, company_id, event_id, event_type, received_at, payload, payload_size, state,
                    attempts, create_uid, create_date, write_uid, write_date)
               SELECT c.ids[1 + n %% array_length(c.ids, 1)], %(company)s, 'evt-' || n, 'order.updated',
                      (now() AT TIME ZONE 'UTC') - make_interval(secs => (%(events)s - n) * 2.592e6 / %(events)s),
                      '{"id": ' || n || ', "status": "paid"}', 30,
                      CASE (n / array_length(c.ids, 1)) %% 200 WHEN 7 THEN 'received' WHEN 8 THEN 'queued'
                           WHEN 9 THEN 'failed' WHEN 10 THEN 'ignored' WHEN 11 THEN 'ignored' ELSE 'done' END,
                      1, 1, now() AT TIME ZONE 'UTC', 1, now() AT TIME ZONE 'UTC'
                 FROM generate_series(1, %(events)s) n, (SELECT %(ids)s::integer[] AS ids) c""",
            {"ids": ids, "company": env.company.id, "events": EVENTS},
        )
        # Buckets: every connector called every hour for DAYS days, a few errors.
        cr.execute(
            """INSERT INTO integration_connector_metric
                   (connector_id, hour, calls, ok, client_error, retryable_error, connection_error, refused,
                    latency_sum_ms, latency_max_ms, histogram)
               SELECT c, h, 100, 95, 2, 2, 1, 0, 100 * 80.0, 900.0, ARRAY[5, 10, 20, 30, 20, 10, 3, 1, 1, 0, 0, 0]
                 FROM unnest(%(ids)s::integer[]) c,
                      generate_series(date_trunc('hour', now() AT TIME ZONE 'UTC') - make_interval(days => %(days)s),
                                      date_trunc('hour', now() AT TIME ZONE 'UTC'), interval '1 hour') h""",
            {"ids": ids, "days": DAYS},
        )
        cr.execute(
            """INSERT INTO integration_connector_state (connector_id, circuit_state, circuit_failures)
               SELECT c, CASE WHEN c %% 10 = 0 THEN 'open' ELSE 'closed' END, 0 FROM unnest(%s::integer[]) c""",
            [ids],
        )
        # Runs: RUNS_PER_FLOW windows per flow, mostly done.
        cr.execute(
            """INSERT INTO integration_sync_run
                   (flow_id, connector_id, company_id, direction, kind, state, fetched_count, created_count,
                    updated_count, unchanged_count, failed_count, create_uid, create_date, write_uid, write_date)
               SELECT f.id, f.connector_id, f.company_id, f.direction, 'window',
                      CASE WHEN n %% 20 = 0 THEN 'failed' WHEN n %% 20 = 1 THEN 'partial' ELSE 'done' END,
                      120, 20, 90, 9, 1, 1, now() AT TIME ZONE 'UTC', 1, now() AT TIME ZONE 'UTC'
                 FROM integration_sync_flow f, generate_series(1, %s) n WHERE f.id = ANY(%s)""",
            [RUNS_PER_FLOW, flows.ids],
        )
        env["ir.config_parameter"].set_param(TOKEN_PARAM, hashlib.sha256(TOKEN.encode()).hexdigest())
        cr.execute("SELECT count(*) FROM integration_webhook_event")
        (stored,) = cr.fetchone()
    with Registry(db).cursor() as cr:
        cr._cnx.autocommit = True  # VACUUM runs outside a transaction
        for table in ("integration_webhook_event", "integration_connector_metric", "integration_sync_run"):
            cr.execute(f"VACUUM ANALYZE {table}")
    return stored


def explain(db):
    """The plans of the two biggest queries, for docs/BENCHMARKS.md (stderr)."""
    with Registry(db).cursor() as cr:
        for query in (
            """SELECT connector_id, COUNT(*) FILTER (WHERE state IN ('received', 'queued', 'processing')),
                      COUNT(*) FILTER (WHERE state = 'failed')
                 FROM integration_webhook_event WHERE state IN ('received', 'queued', 'processing', 'failed')
             GROUP BY connector_id""",
            """SELECT connector_id, SUM(ok), SUM(histogram[1]), SUM(histogram[12]), MAX(hour) FILTER (WHERE ok > 0)
                 FROM integration_connector_metric GROUP BY connector_id""",
        ):
            cr.execute("EXPLAIN (ANALYZE, BUFFERS) " + query)
            print("\n".join(row[0] for row in cr.fetchall()), file=sys.stderr)


def scrape(url):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, body


def main(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    started = time.monotonic()
    stored = populate(db)
    print(f"populated in {time.monotonic() - started:.0f} s", file=sys.stderr)
    explain(db)
    server = OdooServer(odoo_bin, conf, db, "base,web")
    try:
        url = server.url + "/integration/metrics"
        warmup = [scrape(url)[0] for _i in range(WARMUP)]  # each worker's first scrape sums every bucket
        measured = [scrape(url) for _i in range(SCRAPES)]
        latencies = sorted(ms for ms, _body in measured)
        body = measured[-1][1]
    finally:
        server.stop()
    lines = body.decode().splitlines()
    series = [line for line in lines if line and not line.startswith("#")]
    # The route's own figure (queries and families, not HTTP nor rendering), scrape by scrape.
    inside = sorted(
        float(line.split()[-1]) * 1000
        for _ms, scraped in measured
        for line in scraped.decode().splitlines()
        if line.startswith("integration_scrape_duration_seconds ")
    )
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"({SCRAPES} scrapes after {WARMUP} warm-up, {len(series)} series, {len(body)} bytes; "
        f"integration_scrape_duration_seconds p50 {statistics.median(inside):.1f} ms, "
        f"p99 {inside[min(len(inside) - 1, int(len(inside) * 0.99))]:.1f} ms; load average {os.getloadavg()[0]:.1f}; "
        f"max {latencies[-1]:.1f} ms; warm-up scrapes {', '.join(f'{ms:.0f}' for ms in warmup)} ms)",
        file=sys.stderr,
    )
    print(f"metrics scrape: {CONNECTORS} connectors, {stored} events: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:4])
