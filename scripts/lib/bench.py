"""Benchmark of the outbound call path (run by scripts/bench; prints the README figures).

1. Throughput: calls per second through ``connector._request`` (auth, breaker, metrics
   UPSERT, SSRF-guarded transport) against a bare pooled ``requests.Session`` to the
   same local server, from one process each, alternated ROUNDS times; medians compared.
2. Shared rate limit: two OS processes hammer one connector limited to RATE calls/s;
   the rate is measured at the server (arrival times), against the configured one.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import odoo
from odoo.modules.registry import Registry

HERE = os.path.dirname(os.path.abspath(__file__))
CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
RATE = int(os.environ.get("BENCH_RATE", "50"))
RATE_CALLS = int(os.environ.get("BENCH_RATE_CALLS", "150"))


def make_connectors(db, base_url):
    registry = Registry(db)
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
        common = {"base_url": base_url, "allow_http": True, "allow_private_network": True}
        plain = env["integration.connector"].create(dict(common, name="Bench", code="bench"))
        limited = env["integration.connector"].create(
            dict(
                common,
                name="Bench limited",
                code="bench-limited",
                rate_limit=RATE,
                rate_limit_period="second",
                rate_limit_burst=1,
            )
        )
        return plain.id, limited.id


def workers(conf, db, connector_id, calls, count=1, bare=False):
    start_at = time.time() + 6  # registry loading time of the workers
    command = [sys.executable, os.path.join(HERE, "call_worker.py"), "--config", conf, "--db", db]
    command += ["--connector", str(connector_id), "--calls", str(calls), "--path", "/ping"]
    command += ["--start-at", str(start_at)] + (["--bare"] if bare else [])
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE) for _i in range(count)]
    results = []
    for process in processes:
        out, _err = process.communicate()
        if process.returncode:
            raise SystemExit(f"worker failed with {process.returncode}")
        results.append(json.loads(out))
    return results


def arrivals(base_url):
    with urllib.request.urlopen(base_url + "/__arrivals", timeout=10) as response:
        return sorted(json.load(response))


def main(conf, db):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    port_file = tempfile.mktemp()
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "bench_server.py"), port_file])
    try:
        for _i in range(50):
            if os.path.exists(port_file) and open(port_file).read():
                break
            time.sleep(0.1)
        base_url = f"http://127.0.0.1:{open(port_file).read()}"
        plain_id, limited_id = make_connectors(db, base_url)

        bare_rates, path_rates = [], []
        for _round in range(ROUNDS):
            (bare,) = workers(conf, db, plain_id, CALLS, bare=True)
            (path,) = workers(conf, db, plain_id, CALLS)
            assert all(outcome == 200 for _t, outcome in bare["calls"] + path["calls"]), "a call failed"
            bare_rates.append(CALLS / bare["elapsed"])
            path_rates.append(CALLS / path["elapsed"])
            arrivals(base_url)
        bare_rate, path_rate = statistics.median(bare_rates), statistics.median(path_rates)

        results = workers(conf, db, limited_id, RATE_CALLS, count=2)
        outcomes = [outcome for result in results for _t, outcome in result["calls"]]
        seen = arrivals(base_url)
        observed = (len(seen) - 1) / (seen[-1] - seen[0])
        busiest = max(sum(1 for t in seen if start <= t < start + 1.0) for start in seen)

        print(f"cpus: {os.cpu_count()}, calls per throughput run: {CALLS}, rounds: {ROUNDS} (medians)")
        runs = {
            name: ", ".join(f"{r:.0f}" for r in rates) for name, rates in (("bare", bare_rates), ("path", path_rates))
        }
        print(f"bare requests.Session:        {bare_rate:8.0f} calls/s  (runs: {runs['bare']})")
        print(f"connector._request call path: {path_rate:8.0f} calls/s  (runs: {runs['path']})")
        print(f"call path / bare ratio:       {path_rate / bare_rate:8.2f}  (goal >= 0.8)")
        print(
            f"rate limit {RATE}/s, 2 processes x {RATE_CALLS} calls: {len(seen)} arrived "
            f"({outcomes.count(200)} answered 200), observed {observed:.2f}/s, "
            f"ratio {observed / RATE:.3f} (goal <= 1.0 and >= 0.9), busiest 1-s window {busiest} calls"
        )
    finally:
        server.terminate()
        os.unlink(port_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
