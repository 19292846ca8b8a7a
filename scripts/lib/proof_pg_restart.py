"""Proof under faults: PostgreSQL restarted while senders post webhooks (issue 13).

A throw-away PostgreSQL cluster of its own (initdb in a temporary folder, a free port, run
as the ``postgres`` OS user under root, else as the current user; the programs from
PROOF_PG_BIN or pg_config; the machine's own cluster is never touched) gets a copy of the
database; Odoo with 2 HTTP workers serves it. A separate process posts signed deliveries
from 4 threads for SENDING seconds, as a real sender does: an answer 5xx, or none at all
(refused, reset, timed out), is retried with backoff until it is answered. Meanwhile the
cluster is restarted twice: ``pg_ctl restart -m fast``, then ``-m immediate`` (a crash:
the server recovers from its WAL). Then the rows are counted.

Claims: every delivery answered 2xx is stored exactly once (lost 0, duplicated 0); every
delivery sent is acknowledged in the end (the others were refused with a 5xx or not
answered, and landed on a retry); no answer hangs (the longest under HANG_SECONDS).

    python3 scripts/lib/proof_pg_restart.py <odoo.conf> <database> <odoo-bin>
"""

import configparser
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg2
from bench_webhook import OdooServer, env_for, free_port
from fault_tools import check, count_stored, delivered, finish, make_webhook_connector, run_proof, sender

import odoo
from odoo.modules.registry import Registry

NAME = "pg_restart"


def _pg_bin():
    """PostgreSQL's programs: PROOF_PG_BIN, else pg_config's, else the newest Debian-style
    /usr/lib/postgresql/<version>/bin."""
    if os.environ.get("PROOF_PG_BIN"):
        return os.environ["PROOF_PG_BIN"]
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if found and os.path.exists(os.path.join(found, "initdb")):
            return found
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return os.path.dirname(versions[-1]) if versions else "/usr/lib/postgresql/bin"


PG_BIN = _pg_bin()
SENDING = float(os.environ.get("PROOF_PG_RESTART_SECONDS", "24"))
RESTARTS = (("fast", 6.0), ("immediate", 15.0))  # mode, seconds after the sending began
HANG_SECONDS = 10.0  # an answer slower than this is a hang (the sender waits 30 s at most)
CODE = "proof-pg-restart"


class Cluster:
    """A PostgreSQL cluster in a temporary folder: owned by the postgres OS user when this
    runs as root (PostgreSQL refuses to run as root), else by the current user."""

    def __init__(self):
        check(os.path.exists(os.path.join(PG_BIN, "initdb")), f"no initdb in {PG_BIN} (set PROOF_PG_BIN)")
        self.as_root = os.geteuid() == 0
        check(not self.as_root or shutil.which("runuser"), "no runuser command (needed as root)")
        self.folder = tempfile.mkdtemp(prefix="ihub-proof-pg-")
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.started = False
        self._as_postgres("initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust", "--auth-host=md5")
        self.start()
        self.psql("postgres", "CREATE ROLE odoo LOGIN CREATEDB PASSWORD 'odoo'")

    def _as_postgres(self, tool, *args):
        command = [os.path.join(PG_BIN, tool), *args]
        command = ["runuser", "-u", "postgres", "--", *command] if self.as_root else command
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, check=False)
        check(done.returncode == 0, f"{tool} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        return done.stdout

    def _ctl(self, action, *args):
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=60"
        log = os.path.join(self.folder, "postgresql.log")
        self._as_postgres("pg_ctl", action, "-D", self.data, "-w", "-t", "60", "-l", log, "-o", options, *args)

    def start(self):
        self._ctl("start")
        self.started = True

    def restart(self, mode):
        self._ctl("restart", "-m", mode)

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as pid_file:
            return int(pid_file.readline())

    def psql(self, db, statement):
        command = [os.path.join(PG_BIN, "psql"), "-h", self.folder, "-p", str(self.port), "-U", "postgres"]
        self._as_postgres_psql(command + ["-d", db, "-v", "ON_ERROR_STOP=1", "-qc", statement])

    def _as_postgres_psql(self, command):
        command = ["runuser", "-u", "postgres", "--", *command] if self.as_root else command
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        check(done.returncode == 0, f"psql failed: {done.stderr.strip()[-300:]}")

    def connect(self, db):
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="odoo", password="odoo", dbname=db)

    def destroy(self):
        if self.started:
            try:
                self._ctl("stop", "-m", "immediate")
            except Exception as exc:  # noqa: BLE001 - the folder goes all the same
                print(f"(stopping the throw-away cluster: {exc})", file=sys.stderr)
        shutil.rmtree(self.folder, ignore_errors=True)


def copy_database(source_db, cluster, target_db):
    """The source database (machine cluster, conf's credentials) into ``cluster``."""
    config = odoo.tools.config
    env = dict(os.environ, PGPASSWORD=config["db_password"] or "")
    dump = [os.path.join(PG_BIN, "pg_dump"), "-Fc", "--no-owner", "-h", config["db_host"] or "127.0.0.1"]
    dump += ["-p", str(config["db_port"] or 5432), "-U", config["db_user"], source_db]
    cluster.psql("postgres", f'CREATE DATABASE "{target_db}" OWNER odoo')
    restore = [os.path.join(PG_BIN, "pg_restore"), "--no-owner", "-h", "127.0.0.1", "-p", str(cluster.port)]
    restore += ["-U", "odoo", "-d", target_db]
    dumper = subprocess.Popen(dump, stdout=subprocess.PIPE, env=env)
    restored = subprocess.run(restore, stdin=dumper.stdout, env=dict(env, PGPASSWORD="odoo"), capture_output=True)
    dumper.stdout.close()
    check(dumper.wait() == 0 and restored.returncode == 0, f"copy failed: {restored.stderr.decode()[-300:]}")
    filestore = os.path.join(config["data_dir"], "filestore")
    if os.path.isdir(os.path.join(filestore, source_db)):
        shutil.copytree(os.path.join(filestore, source_db), os.path.join(filestore, target_db))


def conf_for(conf, cluster, folder):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    parser["options"]["db_host"] = "127.0.0.1"
    parser["options"]["db_port"] = str(cluster.port)
    parser["options"]["db_user"] = "odoo"
    parser["options"]["db_password"] = "odoo"
    path = os.path.join(folder, "odoo.conf")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        parser.write(handle)
    return path


def prove(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    with Registry(db).cursor() as cr:
        connector_id = make_webhook_connector(env_for(cr), CODE, "Proof: PostgreSQL restart")
    cluster = Cluster()
    target_db = f"{db}_pgr"
    server = None
    try:
        copy_database(db, cluster, target_db)
        log = os.path.join(cluster.folder, "odoo.log")
        server = OdooServer(
            odoo_bin, conf_for(conf, cluster, cluster.folder), target_db, "base,web", extra_args=["--logfile", log]
        )
        url = f"{server.url}/integration/webhook/{CODE}"
        finish(sender([url], "--threads", 2, "--seconds", 2, "--prefix", "warmup", "--retry", 10))
        began = time.time()
        posting = sender([url], "--threads", 4, "--seconds", SENDING, "--prefix", "load", "--retry", 60)
        restarts = []
        for mode, at in RESTARTS:
            time.sleep(max(0.0, began + at - time.time()))
            before = cluster.postmaster_pid()
            started = time.time()
            cluster.restart(mode)
            restarts.append((mode, started, time.time(), before != cluster.postmaster_pid()))
        run = finish(posting)
        with cluster.connect(target_db) as cnx, cnx.cursor() as cr:
            sent, acknowledged = delivered(run)
            rows, distinct, found = count_stored(cr, connector_id, {i for i in sent if i.startswith("load-")})
            cr.execute(
                "SELECT count(*) FROM integration_webhook_event WHERE connector_id = %s AND event_id LIKE 'warmup-%%'",
                [connector_id],
            )
            (warmup_rows,) = cr.fetchone()
        cnx.close()
    finally:
        if server:
            server.stop()
        cluster.destroy()
        filestore = os.path.join(odoo.tools.config["data_dir"], "filestore", target_db)
        shutil.rmtree(filestore, ignore_errors=True)
    load_sent = {i for i in sent if i.startswith("load-")}
    load_acknowledged = {i for i in acknowledged if i.startswith("load-")}
    rows -= warmup_rows
    distinct -= warmup_rows
    answers = run["answers"]
    failures = [a for a in answers if not (isinstance(a[2], int) and a[2] < 500)]
    retried = sum(1 for statuses in run["deliveries"].values() if len(statuses) > 1)
    print(f"PostgreSQL restarted during webhook load ({SENDING:.0f} s of sending, 4 sender threads, Odoo 2 workers):")
    for mode, started, ended, new_pid in restarts:
        window = [a for a in answers if started - 1 <= a[0] <= ended + 5]
        longest = max((a[1] for a in window), default=0.0)
        failed = sum(1 for a in window if not (isinstance(a[2], int) and a[2] < 500))
        print(
            f"  restart -m {mode}: pg_ctl took {ended - started:.1f} s (new postmaster: {'yes' if new_pid else 'NO'}); "
            f"answers from 1 s before to 5 s after: {len(window)}, of them 5xx or unanswered: {failed}; "
            f"longest answer {longest / 1000:.2f} s"
        )
    statuses = {}
    for answer in answers:
        statuses[str(answer[2])] = statuses.get(str(answer[2]), 0) + 1
    longest_all = max(a[1] for a in answers) / 1000
    print(f"  answers: {statuses}; deliveries retried: {retried}")
    print(
        f"sent {len(load_sent)}, acknowledged {len(load_acknowledged)}, stored {found} "
        f"(rows {rows}), lost {len(load_acknowledged) - found}, duplicated {rows - distinct}, "
        f"never acknowledged {len(load_sent - load_acknowledged)}, longest answer {longest_all:.2f} s"
    )
    check(all(new_pid for *_rest, new_pid in restarts), "PostgreSQL was not restarted")
    check(failures, "no answer failed: the restarts did not reach the senders")
    check(len(load_acknowledged) == found, f"{len(load_acknowledged) - found} acknowledged deliveries lost")
    check(rows == distinct, f"{rows - distinct} deliveries stored twice")
    check(found == rows, "rows stored that no sender sent")
    check(load_sent == load_acknowledged, f"{len(load_sent - load_acknowledged)} deliveries never acknowledged")
    check(longest_all < HANG_SECONDS, f"an answer took {longest_all:.1f} s (a hang)")


if __name__ == "__main__":
    run_proof(NAME, lambda: prove(*sys.argv[1:4]))
