"""Proof: the living demo. ``scripts/run`` on a database of its own shows a working hub within a
minute, and leaves nothing running when it stops.

    python3 scripts/lib/proof_demo.py <odoo.conf> <database> <odoo-bin>

The given database is not used (it has no demo data): the script runs ``scripts/run`` with
``DB=<its own>`` and free ports for Odoo and the three sandboxes, waits until Odoo answers, then
checks over JSON-RPC, within 60 s of that: sync runs done for the import flow (orders) and the
export flow (products), webhook events of the demo sender done, a connector in warning, a
failed event. It presses Retry on the failed event once its order is out at the sandbox, and
checks that it ends done (before that, with ``PROOF_DEMO_SCREENSHOT=<path>``, it takes a
screenshot of the Overview in headless Chromium: the README's); stops ``scripts/run`` as
Ctrl-C does (SIGINT to its process group), checks that no process it started is left; starts
it again and stops it with a SIGTERM to the script alone, and checks again; drops its database.
"""

import base64
import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from bench_webhook import free_port  # noqa: E402

from sandbox import demo  # noqa: E402

NAME = "demo"
WITHIN = 60.0
OVERVIEW = "/odoo/action-integration_hub.integration_connector_action_overview"


class Failed(Exception):
    pass


class Odoo:
    """A JSON-RPC client as admin (the demo's login)."""

    def __init__(self, url, db):
        self.url, self.db = url, db
        self.uid = self.call("common", "login", db, "admin", "admin")
        if not self.uid:
            raise Failed("admin/admin cannot log in")

    def call(self, service, method, *args):
        body = {"jsonrpc": "2.0", "method": "call", "params": {"service": service, "method": method, "args": args}}
        request = urllib.request.Request(
            self.url + "/jsonrpc", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("error"):
            raise Failed(f"{method}: {answer['error'].get('data', {}).get('message') or answer['error']}")
        return answer["result"]

    def __call__(self, model, method, *args, **kwargs):
        return self.call("object", "execute_kw", self.db, self.uid, "admin", model, method, list(args), kwargs)

    def count(self, model, domain):
        return self(model, "search_count", domain)


def answers(url):
    try:
        with urllib.request.urlopen(url + "/web/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


class Run:
    """One ``scripts/run`` in a process group of its own, its output in a file."""

    def __init__(self, env, output):
        self.output = output
        self.process = subprocess.Popen(
            [os.path.join(REPO, "scripts", "run")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_until_answering(self, url, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Failed(f"scripts/run ended with {self.process.returncode} before Odoo answered")
            if answers(url):
                return time.monotonic()
            time.sleep(0.5)
        raise Failed(f"Odoo did not answer within {timeout:.0f} s")

    def descendants(self):
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, how):
        """Stop as ``how`` says (``ctrl-c``: SIGINT to the process group, as a terminal does;
        ``kill``: SIGTERM to the script alone); return the processes still alive after it ended."""
        started = self.descendants()
        if how == "ctrl-c":
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            raise Failed(f"scripts/run still running 90 s after {how}") from None
        time.sleep(1)
        left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return started, left

    def kill(self):
        if self.process.poll() is None:
            for process in self.descendants():
                process.kill()
            self.process.kill()
            self.process.wait(10)


def screenshot(url, path):
    """The Overview in headless Chromium as admin (a session from /web/session/authenticate
    given to the browser as its cookie), through Chrome's remote debugging protocol."""
    import websocket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        raise Failed("no chromium for the screenshot")
    body = json.dumps({"jsonrpc": "2.0", "params": {"db": DB, "login": "admin", "password": "admin"}}).encode()
    request = urllib.request.Request(url + "/web/session/authenticate", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        cookie = response.headers.get("Set-Cookie", "")
    session = cookie.split("session_id=", 1)[1].split(";", 1)[0]
    port = free_port()
    profile = tempfile.mkdtemp(prefix="proof_demo_chrome_")
    command = [chromium, "--headless=new", f"--remote-debugging-port={port}", f"--user-data-dir={profile}"]
    command += ["--remote-allow-origins=*", "--window-size=1400,1160", "--hide-scrollbars", "--disable-gpu"]
    command += ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = subprocess.Popen(command + ["about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        target = None
        while not target and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    target = next((t for t in json.loads(response.read()) if t.get("type") == "page"), None)
            except OSError:
                time.sleep(0.3)
        if not target:
            raise Failed("chromium's debugging port did not answer")
        socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60)
        counter = iter(range(1, 10**6))

        def cdp(method, **params):
            number = next(counter)
            socket.send(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = json.loads(socket.recv())
                if message.get("id") == number:
                    if "error" in message:
                        raise Failed(f"{method}: {message['error']}")
                    return message.get("result", {})

        cdp("Network.enable")
        cdp("Network.setCookie", name="session_id", value=session, url=url, path="/")
        cdp("Page.navigate", url=url + OVERVIEW)
        ready = (
            "!!(window.odoo && odoo.isReady && document.querySelectorAll("
            "'.o_integration_overview .o_kanban_record:not(.o_kanban_ghost)').length >= 5)"
        )
        deadline = time.monotonic() + 60
        while not cdp("Runtime.evaluate", expression=ready, returnByValue=True)["result"].get("value"):
            if time.monotonic() > deadline:
                raise Failed("the Overview did not show its cards in the browser")
            time.sleep(0.5)
        cdp("Runtime.evaluate", expression="document.fonts.ready", awaitPromise=True)
        time.sleep(1.5)
        shot = base64.b64decode(cdp("Page.captureScreenshot", format="png")["data"])
        socket.close()
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
    with open(path, "wb") as fh:
        fh.write(shot)
    return len(shot)


def figures(odoo):
    """What the newcomer's Overview shows, from the records behind it."""
    connectors = {
        c["code"]: c
        for c in odoo("integration.connector", "search_read", [], fields=["code", "health_status", "health_reason"])
    }
    runs = {
        code: odoo.count("integration.sync.run", [("flow_id.code", "=", code), ("state", "=", "done")])
        for code in ("orders", "products")
    }
    live = [("connector_id.code", "in", [demo.ORDERS_CONNECTOR, demo.PAYMENTS_CONNECTOR])]
    events_done = odoo.count("integration.webhook.event", live + [("state", "=", "done")])
    failed = odoo(
        "integration.webhook.event",
        "search_read",
        [("connector_id.code", "=", demo.ORDERS_CONNECTOR), ("state", "=", "failed")],
        fields=["event_id", "payload", "last_error"],
    )
    warning = sorted(code for code, c in connectors.items() if c["health_status"] == "warning")
    error = sorted(code for code, c in connectors.items() if c["health_status"] == "error")
    return {
        "runs": runs,
        "events_done": events_done,
        "warning": warning,
        "error": error,
        "failed": failed,
        "connectors": connectors,
    }


def ready(state):
    return (
        state["runs"]["orders"] >= 1
        and state["runs"]["products"] >= 1
        and state["events_done"] >= 1
        and demo.ORDERS_CONNECTOR in state["warning"]
        and state["failed"]
    )


def published_orders(orders_url):
    with urllib.request.urlopen(orders_url + "/_sandbox/stats", timeout=5) as response:
        return json.loads(response.read())["orders"]


def retry_failed_event(odoo, event, orders_url):
    """Retry once the announced order is out at the sandbox; the seconds until it is done."""
    number = json.loads(event["payload"])["pedidoId"]
    deadline = time.monotonic() + 120
    while published_orders(orders_url) < number:
        if time.monotonic() > deadline:
            raise Failed(f"order {number} never published by the order sandbox")
        time.sleep(1)
    started = time.monotonic()
    odoo("integration.webhook.event", "action_retry", [event["id"]])
    while time.monotonic() - started < 60:
        state = odoo("integration.webhook.event", "read", [event["id"]], fields=["state", "last_error"])[0]
        if state["state"] == "done":
            return number, time.monotonic() - started
        if state["state"] == "failed" and time.monotonic() - started > 5:
            raise Failed(f"retried event failed again: {state['last_error']}")
        time.sleep(1)
    raise Failed("retried event not done within 60 s")


def drop(conf, odoo_bin, db, logs):
    subprocess.run(
        [odoo_bin, "db", "-c", conf, "drop", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    parser = configparser.ConfigParser()
    parser.read(conf)
    options = parser["options"] if parser.has_section("options") else {}
    env = dict(os.environ, PGPASSWORD=options.get("db_password", "") or "")
    subprocess.run(
        ["dropdb", "--if-exists", "-h", options.get("db_host") or "127.0.0.1", "-p", options.get("db_port") or "5432"]
        + ["-U", options.get("db_user") or "odoo", db],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if logs and os.path.isdir(logs):
        shutil.rmtree(logs, ignore_errors=True)


def logs_folder(output_path):
    with open(output_path) as fh:
        for line in fh:
            if line.strip().startswith("logs "):
                return line.split(None, 1)[1].split(" (")[0].strip().rstrip("/")
    return None


DB = f"ih_proof_demo_{os.getpid()}"


def main(conf, _database, odoo_bin):
    port = free_port()
    sandbox_ports = {name: free_port() for name in ("orders", "retail", "datasharing")}
    env = dict(
        os.environ,
        DB=DB,
        PORT=str(port),
        GEVENT_PORT=str(free_port()),
        ORDERS_PORT=str(sandbox_ports["orders"]),
        RETAIL_PORT=str(sandbox_ports["retail"]),
        DATASHARING_PORT=str(sandbox_ports["datasharing"]),
    )
    url = f"http://127.0.0.1:{port}"
    orders_url = f"http://127.0.0.1:{sandbox_ports['orders']}"
    output = tempfile.NamedTemporaryFile(prefix="proof_demo_", suffix=".log", delete=False)
    logs = None
    run = None
    try:
        run = Run(env, output)
        up = run.wait_until_answering(url, 600)
        logs = logs_folder(output.name)
        odoo = Odoo(url, DB)
        state = figures(odoo)
        while not ready(state) and time.monotonic() - up < WITHIN:
            time.sleep(2)
            state = figures(odoo)
        seconds = time.monotonic() - up
        print(
            f"demo {seconds:.0f} s after Odoo answered: {state['runs']['orders']} import runs (orders) and "
            f"{state['runs']['products']} export runs (products) done, {state['events_done']} webhook events done, "
            f"in warning: {', '.join(state['warning']) or 'none'}, in error: {', '.join(state['error']) or 'none'}, "
            f"{len(state['failed'])} failed event(s)"
        )
        for code in state["warning"] + state["error"]:
            print(f"  {code}: {state['connectors'][code]['health_reason']}")
        if not ready(state):
            raise Failed(f"not a working hub {WITHIN:.0f} s after Odoo answered (see the figures above)")
        if state["error"]:
            raise Failed(f"connectors in error: {', '.join(state['error'])}")
        event = state["failed"][0]
        print(f"  failed event: {event['last_error'][:140]}")
        shot_path = os.environ.get("PROOF_DEMO_SCREENSHOT")
        if shot_path:
            size = screenshot(url, shot_path)
            shown = os.path.relpath(shot_path, REPO) if shot_path.startswith(REPO + os.sep) else shot_path
            print(f"  screenshot of the Overview: {shown} ({size // 1024} KiB)")
        number, took = retry_failed_event(odoo, event, orders_url)
        print(f"  Retry of the failed event (order {number}, out at the sandbox now): done in {took:.0f} s")
        started, left = run.stop("ctrl-c")
        print(f"stopped with Ctrl-C: {len(started)} processes started, {len(left)} left")
        if left:
            raise Failed("left running after Ctrl-C: " + ", ".join(" ".join(p.cmdline()[:3]) for p in left))
        run = Run(env, output)
        run.wait_until_answering(url, 300)
        time.sleep(3)
        started, left = run.stop("kill")
        print(
            f"started again, stopped with kill (SIGTERM to scripts/run): {len(started)} processes started, "
            f"{len(left)} left"
        )
        if left:
            raise Failed("left running after kill: " + ", ".join(" ".join(p.cmdline()[:3]) for p in left))
        run = None
    finally:
        if run:
            run.kill()
        output.close()
        if os.environ.get("PROOF_DEMO_KEEP_LOG"):
            print(f"scripts/run output: {output.name}")
        else:
            os.unlink(output.name)
        drop(conf, odoo_bin, DB, logs)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:4])
    except Failed as exc:
        print(f"proof {NAME}: FAILED: {exc}")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the contract's last line, whatever went wrong
        print(f"proof {NAME}: FAILED: {type(exc).__name__}: {exc}")
        sys.exit(1)
    print(f"proof {NAME}: ok")
