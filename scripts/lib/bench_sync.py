"""Benchmark of the sync engine (run by scripts/bench, part ``sync``; prints the README figures).

1. Import rate: RECORDS orders pulled from the order sandbox (a separate OS process, no
   rate limit) through a flow into contacts: windows of 30 minutes, pages of 50, the field
   map and bindings, each window run as its job would run. Against it, a bare ORM
   ``create()`` of the same values in batches of 50 (one transaction each, as the pages are).
   Each figure is measured in a fresh OS process ("worker"), alternated ROUNDS times.
2. Memory: the peak RSS of a worker importing 10,000 and 40,000 records.
3. Export rate: EXPORT_RECORDS contacts pushed to the retail sandbox in batches of 500, 3 at
   a time, by the queue_job runner of an Odoo server (202 + job polled to its end).
4. Rate limit: a connector and the retail sandbox both at 100 requests a minute; the
   sandbox's busiest 60 seconds must stay at or under 100.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta

# Shared with the webhook benchmark (this script's folder is on sys.path when it runs).
from bench_webhook import OdooServer, env_for, free_port

import odoo
from odoo.modules.registry import Registry

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RECORDS = int(os.environ.get("BENCH_SYNC_RECORDS", "20000"))
ROUNDS = int(os.environ.get("BENCH_SYNC_ROUNDS", "2"))
EXPORT_RECORDS = int(os.environ.get("BENCH_SYNC_EXPORT_RECORDS", "20000"))
LIMIT_RECORDS = int(os.environ.get("BENCH_SYNC_LIMIT_RECORDS", "2500"))
ORDERS = 40000  # over one day: 10,000 in 6 hours, 20,000 in 12, 40,000 in 24
DAY = datetime(2026, 1, 1)
PAGE = 50


def start_sandbox(module, *args):
    port = free_port()
    command = [sys.executable, "-m", f"sandbox.{module}", "--port", str(port), *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _i in range(100):
        try:
            with urllib.request.urlopen(url + "/_sandbox/stats", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {module} sandbox did not start")


def stats(url):
    with urllib.request.urlopen(url + "/_sandbox/stats", timeout=10) as response:
        return json.load(response)


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Workers (fresh OS processes) ---------------------------------------------------------------


def order_flow(env, url, tag, connector_values=None, **flow_values):
    """The order sandbox's connector and its import flow (contacts by order code); the proofs
    pass their own names and settings."""
    field = env["ir.model.fields"]._get
    connector = env["integration.connector"].create(
        {
            "name": f"Bench orders {tag}",
            "code": f"bench-orders-{tag}",
            "base_url": url,
            "allow_http": True,
            "allow_private_network": True,
            "auth_type": "none",
            **(connector_values or {}),
        }
    )
    return env["integration.sync.flow"].create(
        {
            "name": "Orders",
            "code": "orders",
            "connector_id": connector.id,
            "direction": "import",
            "model_id": env["ir.model"]._get("res.partner").id,
            "remote_path": "/pedidos",
            "extra_params": "direcaoOrdenacao=ASC",
            "id_json_path": "pedidoId",
            "start_at": DAY,
            "window_minutes": 30,
            "overlap_seconds": 0,
            "field_ids": [
                (0, 0, {"json_path": "codigo", "field_id": field("res.partner", "ref").id}),
                (0, 0, {"json_path": "cliente.nome", "field_id": field("res.partner", "name").id}),
                (0, 0, {"json_path": "cliente.email", "field_id": field("res.partner", "email").id}),
            ],
            **flow_values,
        }
    )


def worker_sync(db, url, records, tag):
    registry = Registry(db)
    until = DAY + timedelta(days=records / ORDERS)
    with registry.cursor() as cr:
        flow = order_flow(env_for(cr), url, tag)
        runs = flow._plan_import(until=until)
        run_ids = runs.ids
        for run in runs:
            run.job_uuid = False  # run here, in this process, as the runner would run each job
        cr.execute("DELETE FROM queue_job WHERE model_name = 'integration.sync.run'")
    started = time.perf_counter()
    for run_id in run_ids:
        with registry.cursor() as cr:
            env_for(cr)["integration.sync.run"].browse(run_id)._job_run()
    seconds = time.perf_counter() - started
    with registry.cursor() as cr:
        cr.execute(
            "SELECT sum(created_count), count(*) FILTER (WHERE state != 'done') "
            "FROM integration_sync_run WHERE id IN %s",
            [tuple(run_ids)],
        )
        created, not_done = cr.fetchone()
    return {"seconds": seconds, "records": created, "not_done": not_done, "rss_mib": rss_mib()}


def worker_bare(db, url, records, tag):
    registry = Registry(db)
    from odoo.addons.integration_hub.core.mapper import FieldMap  # noqa: PLC0415 - once the addons path is set

    field_map = FieldMap(
        [
            ("codigo", "ref", "char", "Reference"),
            ("cliente.nome", "name", "char", "Name"),
            ("cliente.email", "email", "char", "Email"),
        ]
    )
    until = DAY + timedelta(days=records / ORDERS)
    values, start = [], DAY
    while start < until:  # the same orders, read ahead window by window and mapped, outside the timing
        end = min(start + timedelta(minutes=30), until)
        page = 1
        while True:
            query = f"dataInicial={start:%Y-%m-%dT%H:%M:%SZ}&dataFinal={end:%Y-%m-%dT%H:%M:%SZ}&pagina={page}"
            with urllib.request.urlopen(f"{url}/pedidos?{query}", timeout=30) as response:
                rows = json.load(response)
            values += [field_map.to_odoo(row) for row in rows]
            if len(rows) < PAGE:
                break
            page += 1
        start = end
    context = {"tracking_disable": True, "mail_create_nolog": True, "mail_notrack": True, "active_test": False}
    started = time.perf_counter()
    for index in range(0, len(values), PAGE):
        with registry.cursor() as cr:
            env_for(cr)["res.partner"].with_context(**context).create(values[index : index + PAGE])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": len(values), "rss_mib": rss_mib()}


def run_worker(conf, db, mode, url, records, tag):
    command = [sys.executable, __file__, "worker", conf, db, "--mode", mode, "--url", url]
    command += ["--records", str(records), "--tag", tag]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Export ---------------------------------------------------------------------------------------


def export_flow(env, url, tag, batch_size, rate_limit, prefix, connector_values=None, **flow_values):
    """The retail sandbox's connector (API key, a rate limit a minute) and its export flow of
    the contacts whose reference starts with ``prefix``; the proofs pass their own settings."""
    connector = env["integration.connector"].create(
        {
            "name": f"Bench retail {tag}",
            "code": f"bench-retail-{tag}",
            "base_url": url,
            "allow_http": True,
            "allow_private_network": True,
            "auth_type": "api_key",
            "api_key_location": "header",
            "api_key_name": "X-API-Key",
            "rate_limit": rate_limit,
            "rate_limit_period": "minute",
            "rate_limit_max_wait": 30.0,
            **(connector_values or {}),
        }
    )
    connector.api_key = "sandbox-retail-key"
    field = env["ir.model.fields"]._get
    return env["integration.sync.flow"].create(
        {
            "name": "Products",
            "code": "products",
            "connector_id": connector.id,
            "direction": "export",
            "model_id": env["ir.model"]._get("res.partner").id,
            "remote_path": "/erp-data/product/batch",
            "export_domain": f"[('ref', '=like', '{prefix}%')]",
            "batch_size": batch_size,
            "parallel_batches": 3,
            "remote_id_json_path": "erpId",
            "job_status_path": "/erp-data/product/batch/{job_id}",
            "poll_interval": 1,
            "field_ids": [
                (0, 0, {"json_path": "description", "field_id": field("res.partner", "name").id}),
                (0, 0, {"json_path": "sku", "field_id": field("res.partner", "ref").id}),
            ],
            **flow_values,
        }
    )


def export(conf, db, odoo_bin, records, batch_size, rate_limit, sandbox_args, tag):
    sandbox, url = start_sandbox("retail", *sandbox_args)
    prefix = f"X{tag}-"
    try:
        with Registry(db).cursor() as cr:
            env = env_for(cr)
            context = {"tracking_disable": True, "mail_create_nolog": True}
            for index in range(0, records, 1000):
                count = min(1000, records - index)
                env["res.partner"].with_context(**context).create(
                    [{"name": f"Product {n}", "ref": f"{prefix}{n}"} for n in range(index, index + count)]
                )
            flow = export_flow(env, url, tag, batch_size, rate_limit, prefix)
            flow_id = flow.id
            planned = time.time()
            runs = flow._sync()
            batches = len(runs)
        channels = "root:4,root.integration.sync:3"
        server = OdooServer(odoo_bin, conf, db, "base,web,queue_job", extra_env={"ODOO_QUEUE_JOB_CHANNELS": channels})
        try:
            deadline = time.time() + 1800
            while time.time() < deadline:
                with Registry(db).cursor() as cr:
                    cr.execute(
                        "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), max(finished_at), "
                        "min(started_at), sum(sent_count), string_agg(DISTINCT state, ',') "
                        "FROM integration_sync_run WHERE flow_id = %s",
                        [flow_id],
                    )
                    waiting, last_done, first_started, sent, states = cr.fetchone()
                if not waiting:
                    break
                time.sleep(1)
        finally:
            server.stop()
        span = (last_done - first_started).total_seconds() if last_done and first_started else float("nan")
        return {
            "batches": batches,
            "sent": sent,
            "states": states,
            "span": span,
            "planned_to_done": time.time() - planned,
            "stats": stats(url),
        }
    finally:
        sandbox.terminate()
        sandbox.wait(10)


def main(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    sandbox, url = start_sandbox("orders", "--orders", str(ORDERS), "--rate", "0", "--start", "2026-01-01T00:00:00Z")
    try:
        sync_rates, bare_rates = [], []
        for round_number in range(ROUNDS):
            synced = run_worker(conf, db, "sync", url, RECORDS, f"r{round_number}")
            bare = run_worker(conf, db, "bare", url, RECORDS, f"r{round_number}")
            if synced["not_done"] or synced["records"] != RECORDS:
                raise SystemExit(f"the import did not finish: {synced}")
            sync_rates.append(synced["records"] / synced["seconds"])
            bare_rates.append(bare["records"] / bare["seconds"])
            print(
                f"round {round_number + 1}: sync {synced['records']} in {synced['seconds']:.1f} s, "
                f"bare {bare['records']} in {bare['seconds']:.1f} s",
                file=sys.stderr,
            )
        ratios = [s / b for s, b in zip(sync_rates, bare_rates, strict=True)]
        print(
            f"sync import: {statistics.median(sync_rates):.0f} records/s; bare ORM create of the same values: "
            f"{statistics.median(bare_rates):.0f} records/s; ratio {statistics.median(ratios):.2f}"
        )
        small = run_worker(conf, db, "sync", url, 10000, "m10")
        large = run_worker(conf, db, "sync", url, 40000, "m40")
        print(
            f"sync import memory: 10000 records {small['rss_mib']:.0f} MiB, 40000 records {large['rss_mib']:.0f} MiB; "
            f"growth {large['rss_mib'] / small['rss_mib']:.2f}"
        )
        print(
            f"(ratios per round {', '.join(f'{r:.2f}' for r in ratios)}; sandbox: {stats(url)['requests']} requests)",
            file=sys.stderr,
        )
    finally:
        sandbox.terminate()
        sandbox.wait(10)
    if EXPORT_RECORDS:
        result = export(conf, db, odoo_bin, EXPORT_RECORDS, 500, 0, ["--rate", "0", "--items-per-second", "1e6"], "e")
        print(
            f"sync export: {result['sent'] / result['span']:.0f} records/s ({result['sent']} records in "
            f"{result['batches']} batches of 500, 3 at a time, first start to last done {result['span']:.1f} s; "
            f"states {result['states']})"
        )
    if LIMIT_RECORDS:
        result = export(conf, db, odoo_bin, LIMIT_RECORDS, 25, 100, ["--rate", "100", "--items-per-second", "1e6"], "l")
        print(
            f"rate limit 100/min: retail sandbox busiest minute {result['stats']['busiest_60s']} requests, "
            f"429 answered {result['stats']['answered_429']}, {result['stats']['requests']} requests in "
            f"{result['span']:.0f} s ({result['batches']} batches of 25; states {result['states']})"
        )


def worker_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("conf")
    parser.add_argument("db")
    parser.add_argument("--mode", choices=("sync", "bare"))
    parser.add_argument("--url")
    parser.add_argument("--records", type=int)
    parser.add_argument("--tag")
    args = parser.parse_args(argv)
    odoo.tools.config.parse_config(["-c", args.conf, "-d", args.db, "--log-level", "warn"])
    worker = worker_sync if args.mode == "sync" else worker_bare
    print(json.dumps(worker(args.db, args.url, args.records, args.tag)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2:])
    else:
        main(*sys.argv[1:4])
