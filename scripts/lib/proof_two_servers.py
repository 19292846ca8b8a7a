"""Proof under faults: two Odoo servers on one database behave as one (issue 13).

Two ``odoo-bin`` servers (separate processes and ports, 2 HTTP workers each, queue_job
loaded) serve the same database. A round-robin balancer (a TCP proxy) stands in front of
them for the queue_job runner (queue_job elects one runner per database; it sends every
job to the balancer, so jobs run on both servers); webhook senders round-robin over the two
servers themselves.

1. Rate limit: RATE_CALLS queued calls to the order sandbox, limited to RATE a minute both
   by the sandbox and by the connector; run by both servers, the sandbox's busiest 60 s
   stays at or under RATE, and no call is answered 429.
2. Breaker: one state. Test Connection (over XML-RPC) pressed on server A against a
   sandbox answering 503 opens the breaker after THRESHOLD failures; pressed on server B it
   is refused by the open breaker, and the sandbox saw THRESHOLD requests in all.
3. Deduplication across servers: PAIRS events, each delivered to A and B at the same
   instant: one row each (one 202, one 200 per pair).
4. One event delivered ONE_EVENT times, round-robin over both: one row, one job.
5. Server A killed (kill -9 of its process tree) while a retrying sender posts to both:
   B carries on; every acknowledged delivery is stored once, every delivery lands.

    python3 scripts/lib/proof_two_servers.py <odoo.conf> <database> <odoo-bin>
"""

import json
import os
import sys
import threading
import time
import xmlrpc.client

import psutil
from bench_webhook import OdooServer, env_for
from fault_tools import (
    SECRET,
    RoundRobinProxy,
    Sandbox,
    check,
    count_stored,
    delivered,
    finish,
    kill_tree,
    make_webhook_connector,
    run_proof,
    sender,
)
from load_client import sign

import odoo
from odoo.modules.registry import Registry

NAME = "two_servers"
RATE = int(os.environ.get("PROOF_TWO_SERVERS_RATE", "240"))  # a minute
RATE_CALLS = int(os.environ.get("PROOF_TWO_SERVERS_RATE_CALLS", "330"))
THRESHOLD = 3
PAIRS = 20
ONE_EVENT = int(os.environ.get("PROOF_TWO_SERVERS_ONE_EVENT", "10000"))
KILL_SENDING = 12.0
PREFIX = "proof-2s"
LOGIN = "proof-two-servers"
PASSWORD = "proof-two-servers-" + os.urandom(8).hex()


def setup(db, orders_url, failing_url):
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        Connector = env["integration.connector"]
        common = {"allow_http": True, "allow_private_network": True, "auth_type": "none"}
        rated = Connector.create(
            {
                **common,
                "name": "Proof: rate limit over two servers",
                "code": f"{PREFIX}-rate",
                "base_url": orders_url,
                "rate_limit": RATE,
                "rate_limit_period": "minute",
                # A call waits for its turn at most a second: a job does not hold a worker
                # while the webhook parts run beside it; past that it is rescheduled.
                "rate_limit_max_wait": 1.0,
                "circuit_threshold": 0,
            }
        )
        failing = Connector.create(
            {
                **common,
                "name": "Proof: one breaker over two servers",
                "code": f"{PREFIX}-breaker",
                "base_url": failing_url,
                "health_path": "/pedidos/1",
                "circuit_threshold": THRESHOLD,
                "circuit_reset_timeout": 600.0,
            }
        )
        webhooks = make_webhook_connector(env, f"{PREFIX}-hooks", "Proof: webhooks over two servers")
        env["res.users"].create(
            {
                "name": "Proof two servers",
                "login": LOGIN,
                "password": PASSWORD,
                "groups_id": [
                    (6, 0, [env.ref("base.group_user").id, env.ref("integration_hub.group_integration_manager").id])
                ],
            }
        )
        for number in range(RATE_CALLS):
            query = f"dataInicial=2026-01-01T00:00:00Z&dataFinal=2026-01-01T00:30:00Z&pagina=1&n={number}"
            rated._enqueue_call("GET", f"/pedidos?{query}", operation=f"proof call {number}")
        return failing.id, webhooks


class Servers:
    """Servers A and B, the balancer, and which OS process belongs to which server."""

    def __init__(self, conf, db, odoo_bin):
        self.proxy = RoundRobinProxy()
        # The elected runner sends each job to the balancer (queue_job's documented set-up
        # for several nodes), with room for both servers' workers.
        env = {
            "ODOO_QUEUE_JOB_CHANNELS": "root:2",
            "ODOO_QUEUE_JOB_HOST": "127.0.0.1",
            "ODOO_QUEUE_JOB_PORT": str(self.proxy.port),
        }
        self.servers = {}
        self.pids = {}
        try:
            for name in ("A", "B"):
                self.servers[name] = OdooServer(odoo_bin, conf, db, "base,web,queue_job", extra_env=env)
                self.proxy.backends.append(self.servers[name].port)
        except BaseException:
            self.stop()
            raise
        self.sample()

    def url(self, name):
        return self.servers[name].url

    def sample(self):
        """Remember the processes of each server now (workers are replaced over time)."""
        for name, server in self.servers.items():
            try:
                root = psutil.Process(server.process.pid)
                for process in [root, *root.children(recursive=True)]:
                    self.pids[process.pid] = name
            except psutil.NoSuchProcess:
                continue

    def stop(self):
        for server in self.servers.values():
            if server.process.poll() is None:
                server.stop()
        self.proxy.close()


class Rpc:
    """XML-RPC as the proof's user, on one server."""

    def __init__(self, url, db):
        self.db = db
        self.uid = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/common").authenticate(db, LOGIN, PASSWORD, {})
        check(self.uid, f"XML-RPC login refused on {url}")
        self.models = xmlrpc.client.ServerProxy(f"{url}/xmlrpc/2/object", allow_none=True)

    def __call__(self, model, method, *args, **kwargs):
        return self.models.execute_kw(self.db, self.uid, PASSWORD, model, method, list(args), kwargs)


def wait_for(description, condition, timeout, servers):
    deadline = time.time() + timeout
    while time.time() < deadline:
        servers.sample()
        value = condition()
        if value:
            return value
        time.sleep(1)
    check(False, f"{description}: not within {timeout} s")
    return None


def query(db, statement, params=()):
    with Registry(db).cursor() as cr:
        cr.execute(statement, params)
        return cr.fetchall()


def prove_rate_limit(db, servers, orders):
    def finished():
        rows = query(
            db,
            "SELECT state, count(*) FROM queue_job WHERE method_name = '_job_call' GROUP BY state",
        )
        states = dict(rows)
        return states if states.get("done", 0) >= RATE_CALLS else None

    states = wait_for("the rate-limited calls", finished, 60 * RATE_CALLS / RATE * 2 + 120, servers)
    ((first, last),) = query(
        db, "SELECT min(date_started), max(date_done) FROM queue_job WHERE method_name = '_job_call'"
    )
    seconds = (last - first).total_seconds()
    by_server = {}
    for (pid,) in query(
        db,
        "SELECT worker_pid FROM queue_job WHERE method_name = '_job_call' AND state = 'done'",
    ):
        server = servers.pids.get(pid, "?")
        by_server[server] = by_server.get(server, 0) + 1
    stats = orders.stats()
    print(
        f"rate limit {RATE}/min over two servers: {RATE_CALLS} queued calls, first start to last done {seconds:.0f} s "
        f"(jobs run by server A {by_server.get('A', 0)}, B {by_server.get('B', 0)}); order sandbox: "
        f"{stats['requests']} requests, busiest minute {stats['busiest_60s']} (limit {RATE}), "
        f"429 answered {stats['answered_429']}"
    )
    check(states.get("done") == RATE_CALLS, f"calls not done: {states}")
    check(by_server.get("A") and by_server.get("B"), f"the calls did not run on both servers: {by_server}")
    check(stats["busiest_60s"] <= RATE, f"busiest minute {stats['busiest_60s']} above {RATE}")
    check(stats["answered_429"] == 0, f"{stats['answered_429']} calls answered 429")
    check(seconds >= 60, "the calls took under a minute: the busiest minute proves nothing")


def prove_breaker(db, servers, failing, failing_id):
    failing.faults(fail_rate=1.0)
    on_a, on_b = Rpc(servers.url("A"), db), Rpc(servers.url("B"), db)
    messages_a = []
    for _press in range(THRESHOLD):
        on_a("integration.connector", "action_test_connection", [failing_id])
        messages_a.append(
            on_a("integration.connector", "read", [failing_id], ["last_test_message"])[0]["last_test_message"]
        )
    sent_after_a = failing.stats()["requests"]
    state_seen_by_b = on_b("integration.connector", "read", [failing_id], ["circuit_state"])[0]["circuit_state"]
    on_b("integration.connector", "action_test_connection", [failing_id])
    message_b = on_b("integration.connector", "read", [failing_id], ["last_test_message"])[0]["last_test_message"]
    sent_after_b = failing.stats()["requests"]
    rows = query(
        db,
        "SELECT circuit_state, circuit_failures FROM integration_connector_state WHERE connector_id = %s",
        [failing_id],
    )
    print(
        f"breaker over two servers (opens after {THRESHOLD} failures): Test Connection {THRESHOLD} times on A "
        f"-> sandbox requests {sent_after_a} (all 503); breaker as B reads it: {state_seen_by_b}; "
        f"Test Connection on B -> {message_b!r}; sandbox requests after {sent_after_b}; "
        f"shared state rows {rows}"
    )
    check(sent_after_a == THRESHOLD, f"A sent {sent_after_a} calls, not {THRESHOLD}: {messages_a}")
    check(state_seen_by_b == "open", f"server B reads the breaker as {state_seen_by_b}")
    check(sent_after_b == sent_after_a, "server B sent a call through the open breaker")
    check(len(rows) == 1 and rows[0][0] == "open", f"breaker state rows: {rows}")


def post(url, event_id, body, results, barrier):
    import http.client  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(SECRET, event_id, timestamp, body),
    }
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.connect()
    barrier.wait()
    connection.request("POST", parts.path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    results.append(response.status)


def prove_dedup(db, servers, hooks_id):
    path = f"/integration/webhook/{PREFIX}-hooks"
    statuses = []
    for pair in range(PAIRS):
        event_id = f"pair-{pair}"
        body = f'{{"type": "order.created", "data": {{"id": "{event_id}"}}}}'.encode()
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=post, args=(servers.url(name) + path, event_id, body, statuses, barrier))
            for name in ("A", "B")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with Registry(db).cursor() as cr:
        rows, distinct, found = count_stored(cr, hooks_id, {f"pair-{n}" for n in range(PAIRS)})
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(
        f"deduplication across servers: {PAIRS} events each delivered to A and B at the same instant: "
        f"answers {counts}; rows {rows}"
    )
    check(rows == PAIRS and distinct == PAIRS and found == PAIRS, f"{rows} rows for {PAIRS} events")
    check(counts == {200: PAIRS, 202: PAIRS}, f"answers {counts}")


def prove_one_event(db, servers, hooks_id):
    path = f"/integration/webhook/{PREFIX}-hooks"
    started = time.time()
    run = finish(
        sender(
            [servers.url("A") + path, servers.url("B") + path],
            "--threads",
            4,
            "--count",
            ONE_EVENT,
            "--same-id",
            "one-event",
            "--prefix",
            "one",
            "--retry",
            30,
        )
    )
    seconds = time.time() - started
    (event_rows,) = query(
        db,
        "SELECT count(*), min(id) FROM integration_webhook_event WHERE connector_id = %s AND event_id = 'one-event'",
        [hooks_id],
    )
    rows, event_id = event_rows

    def jobs():
        # Every processing job that holds the event (alone, or in a batch with others of the
        # connector); queue_job keeps a job's records as a JSON string inside its jsonb.
        found = query(
            db,
            "SELECT count(*) FROM queue_job WHERE model_name = 'integration.webhook.event'"
            " AND method_name = '_job_process' AND ((records #>> '{}')::jsonb -> 'ids') @> %s::jsonb",
            [json.dumps([event_id])],
        )
        return found[0][0] or None

    wait_for("the event's job", jobs, 120, servers)
    time.sleep(2)  # a second job, if there were one, would have been made by now
    job_count = jobs()
    (duplicates,) = query(
        db, "SELECT COALESCE(sum(count), 0) FROM integration_webhook_duplicate WHERE event_id = %s", [event_id]
    )[0]
    statuses = run["statuses"]
    print(
        f"one event delivered {ONE_EVENT} times round-robin over A and B ({seconds:.0f} s): answers {statuses}; "
        f"rows {rows}, jobs {job_count}, deliveries counted as duplicates {duplicates}"
    )
    check(rows == 1, f"{rows} rows for one event")
    check(job_count == 1, f"{job_count} jobs for one event")
    check(statuses.get("202") == 1 and statuses.get("200") == ONE_EVENT - 1, f"answers {statuses}")
    check(duplicates == ONE_EVENT - 1, f"{duplicates} duplicates counted")


def prove_kill(db, servers, hooks_id):
    path = f"/integration/webhook/{PREFIX}-hooks"
    posting = sender(
        [servers.url("A") + path, servers.url("B") + path],
        "--threads",
        4,
        "--seconds",
        KILL_SENDING,
        "--prefix",
        "kill",
        "--retry",
        30,
    )
    time.sleep(KILL_SENDING / 3)
    killed_at = time.time()
    kill_tree(servers.servers["A"].process.pid)
    run = finish(posting)
    sent, acknowledged = delivered(run)
    with Registry(db).cursor() as cr:
        _rows, _distinct, found = count_stored(cr, hooks_id, sent)
        cr.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM integration_webhook_event "
            "WHERE connector_id = %s AND event_id LIKE 'kill-%%'",
            [hooks_id],
        )
        kill_rows, distinct = cr.fetchone()
    after = [a for a in run["answers"] if a[0] > killed_at + 0.5 and isinstance(a[2], int) and 200 <= a[2] < 300]
    statuses = {}
    for answer in run["answers"]:
        statuses[str(answer[2])] = statuses.get(str(answer[2]), 0) + 1
    longest = max(a[1] for a in run["answers"]) / 1000
    print(
        f"server A killed (kill -9, {KILL_SENDING / 3:.0f} s into {KILL_SENDING:.0f} s of sending to A and B): "
        f"answers {statuses}; acknowledged after the kill (by B) {len(after)}"
    )
    print(
        f"sent {len(sent)}, acknowledged {len(acknowledged)}, stored {found} (rows {kill_rows}), "
        f"lost {len(acknowledged) - found}, duplicated {kill_rows - distinct}, "
        f"never acknowledged {len(sent - acknowledged)}, longest answer {longest:.2f} s"
    )
    check(after, "nothing acknowledged after the kill: B did not carry on")
    check(len(acknowledged) == found, f"{len(acknowledged) - found} acknowledged deliveries lost")
    check(kill_rows == distinct, f"{kill_rows - distinct} deliveries stored twice")
    check(kill_rows == found, f"{kill_rows - found} rows no sender sent")
    check(sent == acknowledged, f"{len(sent - acknowledged)} deliveries never acknowledged")


def prove(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    orders = Sandbox("orders", "--orders", "2000", "--rate", str(RATE), "--start", "2026-01-01T00:00:00Z")
    failing = Sandbox("orders", "--orders", "10", "--rate", "0", "--start", "2026-01-01T00:00:00Z")
    servers = None
    try:
        failing_id, hooks_id = setup(db, orders.url, failing.url)
        servers = Servers(conf, db, odoo_bin)
        print(
            f"two servers on {db}: A {servers.url('A')}, B {servers.url('B')}; runner -> balancer :{servers.proxy.port}"
        )
        # The rate-limited calls run in the background, over a minute or more, while the rest goes on.
        prove_breaker(db, servers, failing, failing_id)
        prove_dedup(db, servers, hooks_id)
        prove_one_event(db, servers, hooks_id)
        prove_rate_limit(db, servers, orders)
        prove_kill(db, servers, hooks_id)
        print(
            f"balancer: runner requests to A {servers.proxy.served.get(servers.servers['A'].port, 0)}, "
            f"to B {servers.proxy.served.get(servers.servers['B'].port, 0)}"
        )
    finally:
        if servers:
            servers.stop()
        orders.stop()
        failing.stop()


if __name__ == "__main__":
    run_proof(NAME, lambda: prove(*sys.argv[1:4]))
