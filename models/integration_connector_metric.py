import atexit
import logging
import os
import queue
import threading
import time

from odoo import api, fields, models

from .integration_connector_state import note_breaker_view, state_cursor

_logger = logging.getLogger(__name__)

# Upper bounds (ms) of the latency histogram buckets; the last one is open-ended.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
OUTCOMES = ("ok", "client_error", "retryable_error", "connection_error", "refused")
# Outcomes that say the remote failed (4xx answers are the caller's problem, refusals local).
FAILURE_OUTCOMES = ("client_error", "retryable_error", "connection_error")
# Latency targets differ for reads and writes (the retail portal's guide: 5 s for GET, 30 s
# for POST/PUT), so each hour keeps one row per method class.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
METHOD_CLASSES = [("read", "Read"), ("write", "Write")]


# The hour of the archive row of each connector and class: the sums of the rows the purge removed.
ARCHIVE_HOUR = "1970-01-01 00:00:00"


def method_class(method):
    return "read" if (method or "GET").upper() in READ_METHODS else "write"


def bucket_index(latency_ms):
    for index, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return index + 1  # PostgreSQL arrays start at 1
    return len(LATENCY_BUCKETS_MS) + 1


def percentile_from_histogram(histogram, fraction):
    """Upper bound (ms) of the bucket holding the given fraction of calls, or None."""
    total = sum(histogram or ())
    if not total:
        return None
    threshold = fraction * total
    running = 0
    for index, count in enumerate(histogram):
        running += count
        if running >= threshold:
            # The open-ended last bucket reports its lower bound ("over 10 s").
            return LATENCY_BUCKETS_MS[min(index, len(LATENCY_BUCKETS_MS) - 1)]
    return None


# Successful calls are counted by a writer thread per process, off the call's critical
# path (its UPSERT costs about as much as a fast local call). Failures and anything that
# moves the breaker are still written before the call returns.
_queue = queue.Queue(maxsize=10000)
_writer = {"pid": None}
_writer_lock = threading.Lock()


def count_call_later(dbname, connector_id, outcome, latency_ms, klass="read"):
    """Count a call in the background (its UPSERT also refreshes the breaker view)."""
    if _writer["pid"] != os.getpid():
        with _writer_lock:
            if _writer["pid"] != os.getpid():  # first call of this process (or of a forked child)
                threading.Thread(target=_write_forever, name="integration_hub metrics", daemon=True).start()
                _writer["pid"] = os.getpid()
    try:
        _queue.put_nowait((dbname, connector_id, outcome, latency_ms, klass))
    except queue.Full:  # the writer is behind: count in the caller, slower but exact
        _count_now(dbname, connector_id, outcome, latency_ms, klass)


def _count_now(dbname, connector_id, outcome, latency_ms, klass="read"):
    with state_cursor(dbname) as cr:
        view = IntegrationConnectorMetric._add(cr, connector_id, outcome, latency_ms, read_state=True, klass=klass)
    note_breaker_view(dbname, connector_id, view)


def _write_forever():
    while True:
        item = _queue.get()
        try:
            _count_now(*item)
        except Exception:  # noqa: BLE001 - a lost count must not stop the writer; it is logged
            _logger.exception("integration_hub: could not count a call in the metrics")
        finally:
            _queue.task_done()


def flush_counts(timeout=5.0):
    """Wait until this process's pending counts are written (tests, screens, exit)."""
    deadline = time.monotonic() + timeout
    while _queue.unfinished_tasks and _writer["pid"] == os.getpid() and time.monotonic() < deadline:
        time.sleep(0.005)


atexit.register(flush_counts)


class IntegrationConnectorMetric(models.Model):
    """Calls per connector, hour and method class: counts by outcome, latency sum/max and
    histogram, and when the last success and the last failure happened.

    One row per connector, hour and class (read / write), incremented by one UPSERT per call
    on the shared-state connection (so failed jobs still count). No foreign key, like the
    runtime state. Health, SLA figures, the dashboard and the metrics route read these rows.
    """

    _name = "integration.connector.metric"
    _description = "Integration Connector Metrics (hourly)"
    _auto = False
    _log_access = False
    _order = "hour desc"
    _rec_name = "hour"

    connector_id = fields.Many2one("integration.connector", readonly=True)
    hour = fields.Datetime(readonly=True)
    method_class = fields.Selection(METHOD_CLASSES, readonly=True)
    calls = fields.Integer(readonly=True, aggregator="sum")
    ok = fields.Integer(string="Succeeded", readonly=True, aggregator="sum")
    client_error = fields.Integer(string="Client Errors (4xx)", readonly=True, aggregator="sum")
    retryable_error = fields.Integer(string="Retryable HTTP Errors", readonly=True, aggregator="sum")
    connection_error = fields.Integer(string="Connection Errors", readonly=True, aggregator="sum")
    refused = fields.Integer(
        string="Refused Locally",
        readonly=True,
        aggregator="sum",
        help="Circuit open or rate limit exhausted: no HTTP was sent.",
    )
    failed = fields.Integer(readonly=True, aggregator="sum", help="4xx, 5xx and connection errors.")
    latency_sum_ms = fields.Float(readonly=True, aggregator="sum")
    latency_avg_ms = fields.Float(string="Mean Latency (ms)", readonly=True, aggregator="avg")
    latency_max_ms = fields.Float(readonly=True, aggregator="max")
    last_ok_at = fields.Datetime(string="Last Success", readonly=True, aggregator="max")
    last_failure_at = fields.Datetime(string="Last Failure", readonly=True, aggregator="max")

    def init(self):
        self.env.cr.execute(
            """
            CREATE TABLE IF NOT EXISTS integration_connector_metric (
                id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                connector_id integer NOT NULL,
                hour timestamp NOT NULL,
                calls integer NOT NULL DEFAULT 0,
                ok integer NOT NULL DEFAULT 0,
                client_error integer NOT NULL DEFAULT 0,
                retryable_error integer NOT NULL DEFAULT 0,
                connection_error integer NOT NULL DEFAULT 0,
                refused integer NOT NULL DEFAULT 0,
                latency_sum_ms double precision NOT NULL DEFAULT 0,
                latency_max_ms double precision NOT NULL DEFAULT 0,
                histogram integer[] NOT NULL DEFAULT array_fill(0, ARRAY[%s])
            );
            -- Added by 18.0.1.2.0 (tables of earlier versions get them here, idempotently).
            ALTER TABLE integration_connector_metric
                ADD COLUMN IF NOT EXISTS method_class varchar NOT NULL DEFAULT 'read',
                ADD COLUMN IF NOT EXISTS last_ok_at timestamp,
                ADD COLUMN IF NOT EXISTS last_failure_at timestamp;
            ALTER TABLE integration_connector_metric
                DROP CONSTRAINT IF EXISTS integration_connector_metric_connector_id_hour_key;
            CREATE UNIQUE INDEX IF NOT EXISTS integration_connector_metric_key
                ON integration_connector_metric (connector_id, hour, method_class);
            -- Measures for the charts: failed calls, and the mean latency of the calls sent.
            ALTER TABLE integration_connector_metric
                ADD COLUMN IF NOT EXISTS failed integer
                    GENERATED ALWAYS AS (client_error + retryable_error + connection_error) STORED,
                ADD COLUMN IF NOT EXISTS latency_avg_ms double precision
                    GENERATED ALWAYS AS (latency_sum_ms / NULLIF(calls - refused, 0)) STORED;
            """,
            [len(LATENCY_BUCKETS_MS) + 1],
        )
        # The metrics route reads the latest hours of every connector at once (and folds the
        # hours that closed since its last scrape): a range on the hour alone. One entry per
        # connector and hour, written by the hour's first call only.
        self.env.cr.execute(
            "CREATE INDEX IF NOT EXISTS integration_connector_metric_hour_index ON integration_connector_metric (hour)"
        )

    @staticmethod
    def _add(cr, connector_id, outcome, latency_ms, read_state=False, klass="read"):
        """Count one call (one statement; ``outcome`` in OUTCOMES, ``klass`` read or write).

        With ``read_state``, the same round trip also returns the connector's breaker view
        (circuit state, consecutive failures, blocked by a Retry-After now).
        """
        if outcome not in OUTCOMES:
            raise ValueError(outcome)
        if klass not in ("read", "write"):
            raise ValueError(klass)
        stamp = "last_ok_at" if outcome == "ok" else "last_failure_at" if outcome in FAILURE_OUTCOMES else None
        index = bucket_index(latency_ms)
        first = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        first[index - 1] = 1
        cr.execute(
            f"""
            INSERT INTO integration_connector_metric AS m
                   (connector_id, hour, method_class, calls, {outcome}, latency_sum_ms, latency_max_ms, histogram
                    {", " + stamp if stamp else ""})
            VALUES (%(id)s, date_trunc('hour', now() AT TIME ZONE 'UTC'), %(klass)s, 1, 1, %(ms)s, %(ms)s,
                    %(first)s::integer[] {", now() AT TIME ZONE 'UTC'" if stamp else ""})
            ON CONFLICT (connector_id, hour, method_class) DO UPDATE SET
                calls = m.calls + 1,{f" {stamp} = EXCLUDED.{stamp}," if stamp else ""}
                {outcome} = m.{outcome} + 1,
                latency_sum_ms = m.latency_sum_ms + EXCLUDED.latency_sum_ms,
                latency_max_ms = GREATEST(m.latency_max_ms, EXCLUDED.latency_max_ms),
                histogram[%(index)s] = m.histogram[%(index)s] + 1;
            """  # noqa: S608 - outcome is checked against OUTCOMES
            + (
                """SELECT circuit_state, circuit_failures,
                          COALESCE(rate_blocked_until > extract(epoch FROM clock_timestamp()), false)
                     FROM integration_connector_state WHERE connector_id = %(id)s"""
                if read_state
                else ""
            ),
            {"id": connector_id, "ms": latency_ms, "first": first, "index": index, "klass": klass},
        )
        return cr.fetchone() if read_state else None

    @api.model
    def _cron_purge(self):
        """Cron: fold the hourly rows older than ``integration_hub.metric_retention_days``
        (system parameter, 90 days by default, 31 at least: the SLA looks 30 days back) into
        one archive row per connector and method class, dated ARCHIVE_HOUR.

        Counts are never lost, so the totals the metrics route publishes as Prometheus
        counters never go down (a drop would read as a counter reset, a false spike in
        ``rate()``). One statement: the rows are deleted and added to the archive together.
        """
        days = int(self.env["ir.config_parameter"].sudo().get_param("integration_hub.metric_retention_days", 90))
        cells = len(LATENCY_BUCKETS_MS) + 1
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                f"""
                WITH gone AS (
                    DELETE FROM integration_connector_metric
                     WHERE hour < (now() AT TIME ZONE 'UTC') - make_interval(days => %(days)s)
                       AND hour > %(archive)s
                 RETURNING *
                ), cells AS (
                    SELECT connector_id, method_class, position, SUM(value) AS total
                      FROM gone, unnest(gone.histogram) WITH ORDINALITY AS h(value, position)
                  GROUP BY connector_id, method_class, position
                ), folded AS (
                    SELECT g.connector_id, g.method_class, SUM(g.calls) AS calls, SUM(g.ok) AS ok,
                           SUM(g.client_error) AS client_error, SUM(g.retryable_error) AS retryable_error,
                           SUM(g.connection_error) AS connection_error, SUM(g.refused) AS refused,
                           SUM(g.latency_sum_ms) AS latency_sum_ms, MAX(g.latency_max_ms) AS latency_max_ms,
                           MAX(g.last_ok_at) AS last_ok_at, MAX(g.last_failure_at) AS last_failure_at,
                           (SELECT array_agg(c.total ORDER BY c.position)::integer[] FROM cells c
                             WHERE c.connector_id = g.connector_id AND c.method_class = g.method_class) AS histogram
                      FROM gone g
                  GROUP BY g.connector_id, g.method_class
                )
                INSERT INTO integration_connector_metric AS m
                       (connector_id, hour, method_class, calls, ok, client_error, retryable_error,
                        connection_error, refused, latency_sum_ms, latency_max_ms, last_ok_at, last_failure_at,
                        histogram)
                SELECT connector_id, %(archive)s, method_class, calls, ok, client_error, retryable_error,
                       connection_error, refused, latency_sum_ms, latency_max_ms, last_ok_at, last_failure_at,
                       COALESCE(histogram, array_fill(0, ARRAY[{cells}]))
                  FROM folded
                ON CONFLICT (connector_id, hour, method_class) DO UPDATE SET
                    calls = m.calls + EXCLUDED.calls,
                    ok = m.ok + EXCLUDED.ok,
                    client_error = m.client_error + EXCLUDED.client_error,
                    retryable_error = m.retryable_error + EXCLUDED.retryable_error,
                    connection_error = m.connection_error + EXCLUDED.connection_error,
                    refused = m.refused + EXCLUDED.refused,
                    latency_sum_ms = m.latency_sum_ms + EXCLUDED.latency_sum_ms,
                    latency_max_ms = GREATEST(m.latency_max_ms, EXCLUDED.latency_max_ms),
                    last_ok_at = GREATEST(m.last_ok_at, EXCLUDED.last_ok_at),
                    last_failure_at = GREATEST(m.last_failure_at, EXCLUDED.last_failure_at),
                    histogram = ARRAY(SELECT a + b FROM unnest(m.histogram, EXCLUDED.histogram) AS x(a, b))
                """,  # noqa: S608 - cells is a constant
                {"days": max(days, 31), "archive": ARCHIVE_HOUR},
            )
            return cr.rowcount
