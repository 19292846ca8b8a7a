"""What the proofs under faults (proof_pg_restart, proof_two_servers, proof_kill_worker) share:
the verdict line, servers stopped whatever happens, a sandbox, a signed webhook sender, a
hard kill of a process tree."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SECRET = "whsec_" + "cHJvb2YtdW5kZXItZmF1bHRzLXNpZ25pbmctc2VjcmV0"


class ProofFailed(Exception):
    """A claim of the proof did not hold (the message is the short reason printed)."""


def check(condition, reason):
    if not condition:
        raise ProofFailed(reason)


def run_proof(name, body):
    """Run ``body()`` and print the verdict as the last line; exit 0 only when it held."""

    def terminated(_signum, _frame):
        # scripts/proofs' time limit: the finally blocks still stop the proof's servers.
        raise ProofFailed("terminated (time limit)")

    signal.signal(signal.SIGTERM, terminated)
    try:
        body()
    except ProofFailed as exc:
        print(f"proof {name}: FAILED: {exc}", flush=True)
        sys.exit(1)
    except BaseException as exc:  # noqa: BLE001 - whatever broke, the verdict line comes last
        traceback.print_exc()
        sys.stdout.flush()
        print(f"proof {name}: FAILED: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        sys.exit(1)
    print(f"proof {name}: ok", flush=True)


def kill_tree(pid, sig=9):
    """Send ``sig`` to ``pid`` and every process under it (children first listed, then it)."""
    try:
        parent = psutil.Process(pid)
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(processes, timeout=10)


class Sandbox:
    """A partner sandbox (``sandbox.<module>``) in a process of its own."""

    def __init__(self, module, *args):
        from bench_webhook import free_port  # noqa: PLC0415 - this folder is on sys.path when a proof runs

        port = free_port()
        command = [sys.executable, "-m", f"sandbox.{module}", "--port", str(port), *args]
        # Its stderr is left out: a worker killed mid-request leaves the sandbox a broken pipe
        # to report, which is the point of the proof, not news.
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        for _i in range(100):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ProofFailed(f"the {module} sandbox did not start")

    def stats(self):
        with urllib.request.urlopen(self.url + "/_sandbox/stats", timeout=10) as response:
            return json.load(response)

    def faults(self, **values):
        request = urllib.request.Request(self.url + "/_sandbox/faults", data=json.dumps(values).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def sender(urls, *options):
    """Start load_client.py as a sender (a process of its own); ``finish(sender)`` reads it."""
    command = [sys.executable, os.path.join(HERE, "load_client.py"), *urls, "--secret", SECRET, *map(str, options)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    if process.returncode:
        raise ProofFailed(f"the sender failed: {err.strip()[-300:]}")
    return json.loads(out)


def make_webhook_connector(env, code, name):
    """A Standard Webhooks connector signed with SECRET (its id)."""
    connector = env["integration.connector"].create(
        {"name": name, "code": code, "base_url": "http://127.0.0.1:9/", "webhook_signature": "standard_webhooks"}
    )
    connector.webhook_secret = SECRET
    return connector.id


def delivered(run):
    """Sets of a retrying sender's delivery ids: sent, acknowledged (some attempt 2xx)."""
    sent = set(run["deliveries"])
    acknowledged = {
        msg_id
        for msg_id, statuses in run["deliveries"].items()
        if any(isinstance(s, int) and 200 <= s < 300 for s in statuses)
    }
    return sent, acknowledged


def count_stored(cr, connector_id, event_ids):
    """(rows, distinct event ids, acknowledged ids found) of a connector's events."""
    cr.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM integration_webhook_event WHERE connector_id = %s",
        [connector_id],
    )
    rows, distinct = cr.fetchone()
    cr.execute(
        "SELECT count(DISTINCT event_id) FROM integration_webhook_event WHERE connector_id = %s AND event_id = ANY(%s)",
        [connector_id, list(event_ids)],
    )
    (found,) = cr.fetchone()
    return rows, distinct, found


class RoundRobinProxy:
    """A TCP load balancer on 127.0.0.1: each connection goes to the next backend that
    accepts it (a dead one is skipped), as a round-robin balancer in front of Odoo nodes."""

    def __init__(self):
        self.backends = []  # ports, appended as servers start
        self.served = {}  # port -> connections handed to it
        self._turn = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self):
        with self._lock:
            backends = list(self.backends)
            start = self._turn
            self._turn += 1
        for offset in range(len(backends)):
            port = backends[(start + offset) % len(backends)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self.served[port] = self.served.get(port, 0) + 1
            return upstream
        return None

    def _serve(self, client):
        upstream = self._connect()
        if upstream is None:
            client.close()
            return

        def pipe(source, target):
            try:
                while data := source.recv(65536):
                    target.sendall(data)
                target.shutdown(socket.SHUT_WR)  # the other way may still be talking
            except OSError:
                pass

        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self):
        self._listener.close()
