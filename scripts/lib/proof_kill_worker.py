"""Proof under faults: the worker running a job killed with ``kill -9`` (issue 13).

An Odoo server (2 HTTP workers, the queue_job runner) runs sync jobs; the proof finds the
OS process running a job (``queue_job.worker_pid``, one of the server's prefork workers,
which serves the runner's ``/queue_job/runjob``) and kills it with SIGKILL mid-job. Its
transaction dies with it; queue_job's runner requeues a started job whose lock
(``queue_job_lock``) is free, and the job runs again from the run's last checkpoint.

1. Import: one window of ORDERS orders from the order sandbox (pages of 50, each answered
   after DELAY s), killed once some pages are committed. The window's job completes after
   the requeue; each order is one contact and one binding (no duplicate record).
2. Export: 2 batches of 20 contacts to the retail sandbox, the connector at 4 calls a
   minute. The job following up batch 1 (sent, its remote job polled) is killed while it
   waits for its turn to poll; requeued, it polls and settles the batch without sending it
   again: the sandbox received 2 batches, 40 items.
3. Event batch: EVENTS webhook events in one job, each importing its order through a rule;
   the worker killed after KILL_AFTER are done. After the requeue all are done, each order
   was fetched once (the one in flight at the kill: at most twice), no contact doubled.

    python3 scripts/lib/proof_kill_worker.py <odoo.conf> <database> <odoo-bin>
"""

import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

from bench_sync import export_flow, order_flow
from bench_webhook import OdooServer, env_for
from fault_tools import Sandbox, check, run_proof

import odoo
from odoo.modules.registry import Registry

NAME = "kill_worker"
ORDERS = 600  # one window, 12 pages
DELAY = 0.5  # seconds the order sandbox takes per page
EXPORTED = 40
DAY = datetime(2026, 1, 1)
PREFIX = "proof-kill"
TIMEOUT = 240
EVENTS = 40  # one batch, each event fetching its order (DELAY s)
KILL_AFTER = 10
EVENT_TIMEOUT = 150


def query(db, statement, params=()):
    with Registry(db).cursor() as cr:
        cr.execute(statement, params)
        return cr.fetchall()


def setup(db, orders_url, retail_url):
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        importing = order_flow(
            env,
            orders_url,
            "kill",
            connector_values={"name": "Proof: kill, orders", "code": f"{PREFIX}-orders"},
            name="Orders (kill proof)",
            window_minutes=24 * 60,
        )
        env["res.partner"].create([{"name": f"Kill proof {n}", "ref": f"KPX-{n}"} for n in range(EXPORTED)])
        # The connector at 4 calls a minute: the poll after a batch waits its turn in the job.
        exporting = export_flow(
            env,
            retail_url,
            "kill",
            EXPORTED // 2,
            4,
            "KPX-",
            connector_values={"name": "Proof: kill, retail", "code": f"{PREFIX}-retail"},
            name="Products (kill proof)",
            parallel_batches=1,
        )
        retail = exporting.connector_id
        windows = importing._plan_import(until=DAY + timedelta(days=1))
        batches = exporting._sync()
        check(len(windows) == 1 and len(batches) == 2, f"planned {len(windows)} windows, {len(batches)} batches")
        return importing.id, windows.id, exporting.id, batches.ids, retail.id


def started_job(db, run_id):
    """(uuid, worker pid) of the run's job while it is started, else None."""
    rows = query(
        db,
        "SELECT j.uuid, j.worker_pid FROM integration_sync_run r JOIN queue_job j ON j.uuid = r.job_uuid "
        "WHERE r.id = %s AND j.state = 'started' AND j.worker_pid IS NOT NULL",
        [run_id],
    )
    return rows[0] if rows else None


def restarted(job, killed):
    """Seconds from the kill to the requeued job's start."""
    return job[2].replace(tzinfo=timezone.utc).timestamp() - killed[2]


def kill(pid, server):
    check(pid != server.process.pid, "the job's pid is the server's main process")
    os.kill(pid, signal.SIGKILL)
    return time.time()


def prove_event_batch(db, server, orders, import_flow, deadline):
    """A worker killed while it processes a batch of webhook events: EVENTS events announce
    orders (already imported by the window), one job takes them all, each fetches its order
    from the sandbox (DELAY s) through a rule and the import flow, and the batch commits
    after each of them (each reached a remote). The worker is killed once KILL_AFTER events
    are done. After the requeue every event is done, the sandbox was asked for each order
    once (the one being fetched at the kill: perhaps twice), and no contact is doubled."""
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        flow = env["integration.sync.flow"].browse(import_flow)
        flow.record_path = "/pedidos/{id}"
        connector = flow.connector_id
        connector.write({"webhook_signature": "none", "webhook_batch_size": 100})
        env["integration.webhook.rule"].create(
            {
                "connector_id": connector.id,
                "event_type": "order.*",
                "action_type": "sync_import",
                "sync_flow_id": flow.id,
                "match_path": "pedidoId",
            }
        )
        order_ids = (
            env["integration.binding"].search([("connector_id", "=", connector.id)], limit=EVENTS).mapped("external_id")
        )
        check(len(order_ids) == EVENTS, f"{len(order_ids)} orders bound for {EVENTS} events")
        connector_id = connector.id
    ((contacts_before,),) = query(db, "SELECT count(*) FROM res_partner")
    requests_before = orders.stats()["requests"]
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        connector = env["integration.connector"].browse(connector_id)
        receiver = connector._webhook_receiver(connector.code)
        for number, order_id in enumerate(order_ids):
            body = f'{{"type": "order.updated", "pedidoId": "{order_id}"}}'.encode()
            env["integration.webhook.event"]._ingest(receiver, body, {}, f"kill-{number}", "order.updated")
    killed = None
    while time.time() < deadline and not killed:
        rows = query(
            db,
            "SELECT j.uuid, j.worker_pid, count(*) FILTER (WHERE e.state = 'done') FROM integration_webhook_event e "
            "JOIN queue_job j ON j.id = e.job_id WHERE e.connector_id = %s AND j.state = 'started' "
            "AND j.worker_pid IS NOT NULL GROUP BY j.uuid, j.worker_pid",
            [connector_id],
        )
        if rows and rows[0][2] >= KILL_AFTER:
            killed = (rows[0][0], rows[0][2], kill(rows[0][1], server))
        time.sleep(0.1)
    check(killed, "the event batch's job was never seen started with events done")

    def waiting():
        return query(
            db,
            "SELECT count(*) FROM integration_webhook_event WHERE connector_id = %s AND state != 'done'",
            [connector_id],
        )[0][0]

    while time.time() < deadline and waiting():
        time.sleep(1)
    check(not waiting(), f"{waiting()} events not done within the proof's time")
    (job,) = query(db, "SELECT state, retry, date_started FROM queue_job WHERE uuid = %s", [killed[0]])
    ((contacts_after,),) = query(db, "SELECT count(*) FROM res_partner")
    ((attempts,),) = query(
        db, "SELECT max(attempts) FROM integration_webhook_event WHERE connector_id = %s", [connector_id]
    )
    fetched = orders.stats()["requests"] - requests_before
    print(
        f"event batch killed (kill -9 of its worker) after {killed[1]} of {EVENTS} events done: its job requeued, "
        f"restarted {restarted(job, killed):.0f} s after the kill, {job[0]} (retry {job[1]}); events done {EVENTS}, "
        f"most attempts of one event {attempts}; orders fetched from the sandbox {fetched} for {EVENTS} events "
        f"(the one in flight at the kill may be fetched twice); contacts created {contacts_after - contacts_before}"
    )
    check(job[0] == "done" and job[1] >= 1, f"the batch's job: {job}")
    check(EVENTS <= fetched <= EVENTS + 1, f"{fetched} fetches for {EVENTS} events")
    check(contacts_after == contacts_before, f"{contacts_after - contacts_before} contacts created by updates")


def prove(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    began = datetime.now(timezone.utc).replace(tzinfo=None)
    orders = Sandbox("orders", "--orders", str(ORDERS), "--rate", "0", "--start", "2026-01-01T00:00:00Z")
    retail = Sandbox("retail", "--rate", "0", "--items-per-second", "1e6")
    server = None
    try:
        orders.faults(delay=DELAY)
        import_flow, window_id, export_flow_id, batch_ids, retail_id = setup(db, orders.url, retail.url)
        server = OdooServer(odoo_bin, conf, db, "base,web,queue_job", extra_env={"ODOO_QUEUE_JOB_CHANNELS": "root:2"})
        deadline = time.time() + TIMEOUT
        window_kill = batch_kill = None
        while time.time() < deadline and not (window_kill and batch_kill):
            if not window_kill:
                job = started_job(db, window_id)
                ((fetched,),) = query(db, "SELECT fetched_count FROM integration_sync_run WHERE id = %s", [window_id])
                if job and (fetched or 0) >= 100:  # two pages committed, more to come
                    window_kill = (job[0], fetched, kill(job[1], server))
            if not batch_kill:
                job = started_job(db, batch_ids[0])
                rows = query(
                    db,
                    "SELECT r.remote_job_id, s.rate_tat - extract(epoch FROM clock_timestamp()) "
                    "FROM integration_sync_run r, integration_connector_state s "
                    "WHERE r.id = %s AND s.connector_id = %s",
                    [batch_ids[0], retail_id],
                )
                # Sent (a remote job to poll), and its poll's turn still seconds away: the
                # killed job is waiting inside the call path, nothing in flight.
                if job and rows and rows[0][0] and rows[0][1] is not None and rows[0][1] > 3:
                    batch_kill = (job[0], retail.stats()["batches"], kill(job[1], server))
            time.sleep(0.2)
        check(window_kill, "the window's job was never seen started with pages committed")
        check(batch_kill, "batch 1's poll was never seen waiting for its turn")

        def settled():
            return query(
                db,
                "SELECT id, state, kind FROM integration_sync_run "
                "WHERE flow_id IN %s AND state NOT IN ('done', 'partial', 'failed')",
                [(import_flow, export_flow_id)],
            )

        while time.time() < deadline and settled():
            time.sleep(1)
        check(not settled(), f"runs not finished within {TIMEOUT} s: {settled()}")
        jobs = {
            uuid: (state, retry, started)
            for uuid, state, retry, started in query(
                db,
                "SELECT uuid, state, retry, date_started FROM queue_job WHERE uuid IN %s",
                [(window_kill[0], batch_kill[0])],
            )
        }
        prove_event_batch(db, server, orders, import_flow, deadline + EVENT_TIMEOUT)
    finally:
        if server:
            server.stop()
        orders.stop()
        stats = retail.stats()
        retail.stop()
    window = query(
        db,
        "SELECT state, fetched_count, created_count, updated_count FROM integration_sync_run WHERE id = %s",
        [window_id],
    )[0]
    # Contacts the import made: the order sandbox's codes (P and 7 digits) as references.
    ((contacts, distinct_refs),) = query(
        db,
        "SELECT count(*), count(DISTINCT ref) FROM res_partner WHERE create_date >= %s AND ref ~ '^P[0-9]{7}$'",
        [began],
    )
    ((bindings, distinct_bindings),) = query(
        db,
        "SELECT count(*), count(DISTINCT external_id) FROM integration_binding b JOIN integration_connector c "
        "ON c.id = b.connector_id WHERE c.code = %s",
        [f"{PREFIX}-orders"],
    )
    batches = query(
        db, "SELECT state, sent_count FROM integration_sync_run WHERE id IN %s ORDER BY id", [tuple(batch_ids)]
    )
    window_job, batch_job = jobs[window_kill[0]], jobs[batch_kill[0]]
    print(
        f"import window killed (kill -9 of its worker) after {window_kill[1]} of {ORDERS} orders: its job requeued, "
        f"restarted {restarted(window_job, window_kill):.0f} s after the kill, {window_job[0]} "
        f"(retry {window_job[1]}); "
        f"window {window[0]}: fetched {window[1]}, created {window[2]}, updated {window[3]}; contacts created "
        f"{contacts} ({distinct_refs} distinct orders), bindings {bindings}; duplicated {contacts - distinct_refs}"
    )
    print(
        f"export batch 1 killed while waiting to poll its remote job (sandbox had {batch_kill[1]} batch): its job "
        f"requeued, restarted {restarted(batch_job, batch_kill):.0f} s after the kill, {batch_job[0]} (retry "
        f"{batch_job[1]}); batches {batches}; retail sandbox received "
        f"{stats['batches']} batches, {stats['items_received']} items (of {EXPORTED}); double-sent batches "
        f"{stats['batches'] - len(batch_ids)}"
    )
    check(contacts == ORDERS and distinct_refs == ORDERS, f"{contacts} contacts for {ORDERS} orders")
    check(window_job[0] == "done" and window_job[1] >= 1, f"the window's job: {window_job}")
    check(window[0] == "done", f"the window ended {window[0]}")
    check(bindings == ORDERS and distinct_bindings == ORDERS, f"{bindings} bindings for {ORDERS} orders")
    check(batch_job[0] == "done" and batch_job[1] >= 1, f"the batch's job: {batch_job}")
    check(all(state == "done" for state, _sent in batches), f"batches {batches}")
    check(stats["batches"] == len(batch_ids), f"{stats['batches']} batches received for {len(batch_ids)}")
    check(stats["items_received"] == EXPORTED, f"{stats['items_received']} items received for {EXPORTED}")


if __name__ == "__main__":
    run_proof(NAME, lambda: prove(*sys.argv[1:4]))
