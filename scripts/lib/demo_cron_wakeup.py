"""Wake Odoo's cron thread for the demo's crons during its first two minutes (scripts/run).

Odoo's cron thread first looks for due jobs a minute after the server starts, then about once a
minute: a newcomer would wait two minutes for the first health status. This waits until Odoo
answers, then every 15 s for 2 minutes adds a trigger (``ir_cron_trigger``, as
``ir.cron._trigger()`` does) to the crons that queue due sync flows, probe connectors and rate
their health, and notifies the cron thread (``cron_trigger``, as ``ir.cron._notifydb()`` does).
Nothing else: the crons then run as always, in Odoo's cron thread.

    python3 scripts/lib/demo_cron_wakeup.py <database> <odoo url>

Connection settings from the environment scripts/setup exports (IH_DB_HOST, ...).
"""

import os
import sys
import time
import urllib.request

import psycopg2

CRONS = (
    "ir_cron_integration_sync_flow_due",
    "ir_cron_integration_connector_probe",
    "ir_cron_integration_connector_health",
)
EVERY = 15
TIMES = 8


def wait_for(url, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/web/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def connect(db):
    return psycopg2.connect(
        dbname=db,
        host=os.environ.get("IH_DB_HOST", "127.0.0.1"),
        port=os.environ.get("IH_DB_PORT", "5432"),
        user=os.environ.get("IH_DB_USER", "odoo"),
        password=os.environ.get("IH_DB_PASSWORD", ""),
    )


def wake(db):
    connection = connect(db)
    try:
        with connection, connection.cursor() as cr:
            cr.execute(
                """INSERT INTO ir_cron_trigger (cron_id, call_at, create_uid, write_uid, create_date, write_date)
                   SELECT res_id, now() AT TIME ZONE 'UTC', 1, 1, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
                     FROM ir_model_data
                    WHERE module = 'integration_hub' AND model = 'ir.cron' AND name IN %s""",
                [CRONS],
            )
    finally:
        connection.close()
    # The cron threads listen on a connection to the "postgres" database, as Odoo notifies them.
    connection = connect("postgres")
    try:
        with connection, connection.cursor() as cr:
            cr.execute("SELECT pg_notify('cron_trigger', %s)", [db])
    finally:
        connection.close()


def main():
    db, url = sys.argv[1], sys.argv[2].rstrip("/")
    if not wait_for(url):
        return 1
    for _ in range(TIMES):
        try:
            wake(db)
        except psycopg2.Error as exc:
            sys.stderr.write(f"cron wake-up failed: {exc}\n")
        time.sleep(EVERY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
