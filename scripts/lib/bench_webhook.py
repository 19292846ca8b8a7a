"""Benchmark of the webhook inbox (run by scripts/bench; prints the README figures).

1. Ingest: Odoo with 2 HTTP workers; a second OS process (load_client.py) sends signed
   Standard Webhooks deliveries from THREADS threads for SECONDS, alternating ROUNDS
   times with Odoo's own GET /web/health measured the same way; the throughput ratio is
   the median of the rounds' ratios. Then the rows are counted: every 202 must be exactly
   one stored event, nothing else stored.
2. Processing: EVENTS events stored at once, processed by the queue_job runner (2
   channels) through a no-code rule that creates or updates a contact per event: in
   batches of BATCH events per job, then the same number with one job per event.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import psutil

import odoo
from odoo.modules.registry import Registry

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "whsec_" + "YmVuY2htYXJrLXNpZ25pbmctc2VjcmV0LTMyYnl0ZXM="
THREADS = int(os.environ.get("BENCH_WEBHOOK_THREADS", "4"))
SECONDS = float(os.environ.get("BENCH_WEBHOOK_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_WEBHOOK_ROUNDS", "5"))
EVENTS = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "5000"))
BATCH = int(os.environ.get("BENCH_WEBHOOK_BATCH", "100"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(cr):
    return odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})


def make_connector(db):
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        connector = env["integration.connector"].create(
            {
                "name": "Bench webhooks",
                "code": "bench-hooks",
                "base_url": "http://127.0.0.1:9/",
                "webhook_signature": "standard_webhooks",
            }
        )
        connector.webhook_secret = SECRET
        return connector.id


class OdooServer:
    """``odoo-bin server`` with 2 HTTP workers on free ports, started and waited for.

    :param extra_args: more command-line options
    :param logfile: where the server logs (the proofs read it for errors)
    """

    def __init__(self, odoo_bin, conf, db, load, extra_env=None, extra_args=(), logfile="/dev/null"):
        self.port = free_port()
        # -d without --db-filter: Odoo serves that one database without listing the
        # server's databases on each request that carries no session (as webhooks do).
        command = [odoo_bin, "server", "-c", conf, "-d", db, "--workers", "2"]
        command += ["--http-port", str(self.port), "--gevent-port", str(free_port()), "--max-cron-threads", "0"]
        command += ["--load", load, "--log-level", "warn"]
        command += list(extra_args) if "--logfile" in extra_args else ["--logfile", logfile, *extra_args]
        self.process = subprocess.Popen(command, env=dict(os.environ, **(extra_env or {})))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/web/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit("Odoo did not start")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load(url, seconds, secret=None, prefix="evt", threads=THREADS):
    command = [sys.executable, os.path.join(HERE, "load_client.py"), url, "--threads", str(threads)]
    command += ["--seconds", str(seconds), "--prefix", prefix] + (["--secret", secret] if secret else [])
    out = subprocess.run(command, check=True, capture_output=True).stdout
    return json.loads(out)


class CpuMeter:
    """CPU seconds spent by Odoo's processes, PostgreSQL's and the load client during a run."""

    def __init__(self, server):
        self.server = server

    def _sample(self):
        odoo_pids = {self.server.process.pid}
        try:
            odoo_pids.update(child.pid for child in psutil.Process(self.server.process.pid).children(recursive=True))
        except psutil.Error:
            pass
        totals = {"odoo": 0.0, "postgres": 0.0}
        for process in psutil.process_iter(["name", "cpu_times"]):
            times = process.info["cpu_times"]
            if times is None:
                continue
            if process.pid in odoo_pids:
                totals["odoo"] += times.user + times.system
            elif (process.info["name"] or "").startswith("postgres"):
                totals["postgres"] += times.user + times.system
        children = os.times()
        totals["client"] = children.children_user + children.children_system
        return totals

    def measure(self, run):
        before = self._sample()
        result = run()
        after = self._sample()
        result["cpu"] = {key: after[key] - before[key] for key in before}
        return result


def cpu_line(runs):
    requests = sum(len(run["latencies"]) for run in runs)
    parts = {key: sum(run["cpu"][key] for run in runs) / requests * 1000 for key in runs[0]["cpu"]}
    total = sum(parts.values())
    return (
        f"CPU per request: Odoo {parts['odoo']:.2f} ms, PostgreSQL {parts['postgres']:.2f} ms, "
        f"client {parts['client']:.2f} ms (total {total:.2f} ms)"
    )


def summary(runs):
    latencies = sorted(v for run in runs for v in run["latencies"])
    requests = len(latencies)
    elapsed = sum(run["elapsed"] for run in runs)
    statuses = {}
    for run in runs:
        for status, count in run["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return requests / elapsed, statistics.median(latencies), p99, statuses


def ingest(conf, db, odoo_bin, connector_id):
    server = OdooServer(odoo_bin, conf, db, "base,web")
    webhook_url = f"{server.url}/integration/webhook/bench-hooks"
    try:
        # Warm both workers up (registry, routing map) before measuring.
        load(server.url + "/web/health", 2)
        load(webhook_url, 2, SECRET, prefix="warmup")
        health_runs, webhook_runs = [], []
        meter = CpuMeter(server)
        for round_no in range(ROUNDS):
            health_runs.append(meter.measure(lambda: load(server.url + "/web/health", SECONDS)))
            webhook_runs.append(
                meter.measure(lambda round_no=round_no: load(webhook_url, SECONDS, SECRET, prefix=f"round{round_no}"))
            )
    finally:
        server.stop()
    accepted = [event_id for run in webhook_runs for event_id in run["accepted"]]
    with Registry(db).cursor() as cr:
        cr.execute(
            """SELECT count(*), count(DISTINCT e.event_id), COALESCE(sum(d.count), 0)
                 FROM integration_webhook_event e LEFT JOIN integration_webhook_duplicate d ON d.event_id = e.id
                WHERE e.connector_id = %s AND e.event_id LIKE 'round%%'""",
            [connector_id],
        )
        rows, distinct, duplicates = cr.fetchone()
        cr.execute(
            "SELECT count(*) FROM integration_webhook_event WHERE connector_id = %s AND event_id = ANY(%s)",
            [connector_id, accepted],
        )
        (found,) = cr.fetchone()
        cr.execute(
            "SELECT count(*) FROM queue_job WHERE identity_key = %s AND state = 'pending'",
            ["integration.webhook.event:dispatch"],
        )
        (dispatchers,) = cr.fetchone()
    health = summary(health_runs)
    webhook = summary(webhook_runs)
    print(f"cpus: {os.cpu_count()}, Odoo 2 HTTP workers, client: {THREADS} threads, {ROUNDS} x {SECONDS:.0f} s each")
    for name, (rate, p50, p99, statuses), runs in (
        ("GET /web/health", health, health_runs),
        ("signed webhook POST", webhook, webhook_runs),
    ):
        print(f"{name:22s} {rate:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  statuses {statuses}")
        print(f"{'':22s} {cpu_line(runs)}")
    # Each round's two loads ran next to each other: their ratio is the figure this shared
    # machine measures best (whole-run totals mix quiet and busy moments of the machine).
    ratios = [
        (len(w["latencies"]) / w["elapsed"]) / (len(h["latencies"]) / h["elapsed"])
        for h, w in zip(health_runs, webhook_runs, strict=True)
    ]
    print(
        f"webhook / health throughput ratio: median of rounds {statistics.median(ratios):.2f} "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; whole run {webhook[0] / health[0]:.2f})  "
        "(goal >= 0.6; p99 goal < 250 ms)"
    )
    print(
        f"answered 202: {len(accepted)}; rows stored: {rows} ({distinct} distinct ids, {found} of the 202s found; "
        f"{dispatchers} dispatcher job waiting for the runner); lost: {len(accepted) - found}; "
        f"duplicated: {rows - distinct + duplicates}"
    )


def processing(conf, db, odoo_bin, connector_id):
    """The same EVENTS events, through the same rule, processed twice in this run: in batches
    of BATCH events per job, then with one job per event. Prints the ratio line."""
    with Registry(db).cursor() as cr:
        contact_rule(env_for(cr), connector_id, "order.*")
    batched = process_once(conf, db, odoo_bin, connector_id, BATCH, "batched")
    single = process_once(conf, db, odoo_bin, connector_id, 1, "single")
    print(
        f"event processing: {batched:.0f} events/s batched; one job per event: {single:.0f} events/s; "
        f"ratio {batched / single:.1f}"
    )


def contact_rule(env, connector_id, event_type):
    """A no-code rule of the connector: a contact created or updated by ``ref`` (the
    payload's ``data.id``), its name from ``data.name``."""
    field = env["ir.model.fields"]._get
    return env["integration.webhook.rule"].create(
        {
            "connector_id": connector_id,
            "event_type": event_type,
            "action_type": "upsert",
            "model_id": env["ir.model"]._get("res.partner").id,
            "match_field_id": field("res.partner", "ref").id,
            "match_path": "data.id",
            "field_ids": [(0, 0, {"field_id": field("res.partner", "name").id, "json_path": "data.name"})],
        }
    )


def process_once(conf, db, odoo_bin, connector_id, batch_size, label):
    """Store EVENTS events at once, then time the queue_job runner (channel root:2) from the
    first job started (the dispatcher) to the last done; returns events settled per second."""
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        cr.execute("DELETE FROM queue_job WHERE channel = 'root.integration.webhook'")
        env["integration.webhook.event"].search([]).unlink()
        connector = env["integration.connector"].browse(connector_id)
        connector.webhook_batch_size = batch_size
        receiver = connector._webhook_receiver(connector.code)
        Event = env["integration.webhook.event"]
        started = time.monotonic()
        for number in range(EVENTS):
            body = json.dumps({"type": "order.created", "data": {"id": f"{label}-{number}", "name": f"Bench {number}"}})
            Event._ingest(receiver, body.encode(), {}, f"{label}-{number}", "order.created")
        queued_in = time.monotonic() - started  # stored, and one dispatcher job queued
    # Deleting the previous run's rows leaves dead tuples: vacuum, as between runs of a day.
    with Registry(db).cursor() as cr:
        cr.connection.set_session(autocommit=True)
        cr.execute("VACUUM ANALYZE integration_webhook_event, queue_job, res_partner")
    server = OdooServer(odoo_bin, conf, db, "base,web,queue_job", extra_env={"ODOO_QUEUE_JOB_CHANNELS": "root:2"})
    try:
        deadline = time.time() + 1800
        while time.time() < deadline:
            with Registry(db).cursor() as cr:
                cr.execute(
                    "SELECT state, count(*) FROM integration_webhook_event WHERE connector_id = %s GROUP BY state",
                    [connector_id],
                )
                states = dict(cr.fetchall())
            if states.get("done", 0) + states.get("failed", 0) + states.get("ignored", 0) >= EVENTS:
                break
            time.sleep(1)
    finally:
        server.stop()
    with Registry(db).cursor() as cr:
        # From the first job started (the dispatcher, which creates the event jobs) to the last done.
        cr.execute(
            """SELECT min(date_started), max(date_done), count(*) FILTER (WHERE state = 'done'),
                      count(*) FILTER (WHERE state = 'done' AND identity_key != %s)
                 FROM queue_job WHERE channel = 'root.integration.webhook'""",
            ["integration.webhook.event:dispatch"],
        )
        first_started, last_done, jobs_done, event_jobs = cr.fetchone()
        cr.execute("SELECT count(*) FROM res_partner WHERE ref LIKE %s", [f"{label}-%"])
        (partners,) = cr.fetchone()
    settled = states.get("done", 0) + states.get("failed", 0) + states.get("ignored", 0)
    span = (last_done - first_started).total_seconds() if first_started and last_done else float("nan")
    print(
        f"{label}: {EVENTS} stored events ({queued_in:.1f} s to store, one transaction), {batch_size} per job, "
        f"runner channel root:2: states {states}, jobs done {jobs_done} ({event_jobs} processing), "
        f"contacts created {partners}, first start to last done {span:.1f} s = {settled / span:.1f} events/s"
    )
    return settled / span


def main(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    connector_id = make_connector(db)
    if ROUNDS:
        ingest(conf, db, odoo_bin, connector_id)
    if EVENTS:
        processing(conf, db, odoo_bin, connector_id)


if __name__ == "__main__":
    main(*sys.argv[1:4])
