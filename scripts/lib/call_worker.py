"""Make calls through a connector from a separate OS process (tests and benchmark).

    python3 call_worker.py --config ODOO_CONF --db DB --connector ID --calls N
                           [--path /x] [--start-at EPOCH] [--bare]

Loads the Odoo registry of DB, waits until --start-at (so that several workers start
together), makes N sequential calls and prints one JSON object: per call the wall
clock time it was sent and its outcome (HTTP status or error class). With --bare the
calls go through a plain pooled requests.Session to the connector's base URL instead
(the baseline of the benchmark).
"""

import argparse
import json
import sys
import time


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--connector", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--bare", action="store_true")
    args = parser.parse_args(argv)

    import odoo
    from odoo.modules.registry import Registry

    odoo.tools.config.parse_config(["-c", args.config, "-d", args.db, "--log-level", "warn"])
    registry = Registry(args.db)
    results = []
    with registry.cursor() as cr:
        env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
        connector = env["integration.connector"].browse(args.connector)
        connector.ensure_one()
        base_url = connector.base_url.rstrip("/")
        if args.bare:
            import requests

            session = requests.Session()
        delay = args.start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        for _index in range(args.calls):
            sent = time.time()
            try:
                if args.bare:
                    outcome = session.get(base_url + args.path, timeout=(5, 30)).status_code
                else:
                    outcome = connector._request("GET", args.path, raise_for_status=False).status_code
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
                outcome = type(exc).__name__
            results.append([sent, outcome])
        elapsed = time.perf_counter() - started
        # Leaving the block commits what the calls recorded (errors, call logs).
    json.dump({"elapsed": elapsed, "calls": results}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
