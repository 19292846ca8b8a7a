"""Autocommit PostgreSQL connections of this addon's own, beside Odoo's cursor pool.

Some statements must not belong to the caller's transaction: shared state (rate limit,
breaker, counters) that must survive a job's rollback and never hold a row lock for a whole
transaction, and the webhook inbox, whose insert commits before the sender is answered. Each
statement on these connections commits at once.

They are kept apart from Odoo's pool on purpose: Odoo resets a connection each time it lends
it (``DISCARD ALL``), which forgets prepared statements and cached plans, so that a statement
is parsed and planned again, foreign-key checks included, on every request. Connections here
keep their session: a statement prepared when a connection opens stays prepared.
"""

import os
import select
import threading
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
from psycopg2 import sql as pgsql
from psycopg2.extensions import TRANSACTION_STATUS_IDLE


class AutocommitPool:
    """Idle autocommit connections per database, lent one at a time, in this process.

    :param connect: ``connect(dbname)`` returns a new psycopg2 connection
    :param settings: statements run once on each new connection (``SET ...``)
    :param prepared: ``{name: (parameter types, statement)}`` prepared once on each new
        connection (``PREPARE name (types) AS statement``); run with ``EXECUTE name(...)``
    :param max_idle: idle connections kept per database; more are closed when given back

    A connection is lent to one caller at a time (threads and nested uses get connections
    of their own), and forgotten when it fails at the network level. A process made by
    ``fork`` (Odoo's prefork workers) starts with no connection: the parent's are never
    used, nor finalized, in the child (that would end the parent's sessions).
    """

    def __init__(self, connect, settings=(), prepared=None, max_idle=8):
        self._connect = connect
        self._settings = tuple(settings)
        self._prepared = dict(prepared or {})
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle = {}  # dbname -> [connection]
        self._pid = os.getpid()
        self._inherited = []

    def _forget_inherited(self):
        """After a fork: keep the parent's connections away from use and from finalization."""
        if self._pid != os.getpid():
            for connections in self._idle.values():
                self._inherited.extend(connections)
            self._idle = {}
            self._pid = os.getpid()

    def _take(self, dbname):
        with self._lock:
            self._forget_inherited()
            idle = self._idle.get(dbname)
            while idle:
                cnx = idle.pop()
                if _is_alive(cnx):
                    return cnx
                cnx.close()
        return self._open(dbname)

    def _open(self, dbname):
        cnx = self._connect(dbname)
        try:
            cnx.autocommit = True
            with cnx.cursor() as cr:
                for statement in self._settings:
                    cr.execute(statement)
                for name, (types, statement) in self._prepared.items():
                    prepare = pgsql.SQL("PREPARE {} ({}) AS {}").format(
                        pgsql.Identifier(name), pgsql.SQL(", ").join(map(pgsql.SQL, types)), pgsql.SQL(statement)
                    )
                    try:
                        cr.execute(prepare)
                    except psycopg2.errors.DuplicatePreparedStatement:
                        continue  # a pooler between us and PostgreSQL lent a session that has it
        except BaseException:
            cnx.close()
            raise
        return cnx

    def _give_back(self, dbname, cnx, pid):
        with self._lock:
            if pid != os.getpid():
                self._inherited.append(cnx)  # taken before a fork: the parent's session
                return
            self._forget_inherited()
            if not cnx.closed and cnx.info.transaction_status == TRANSACTION_STATUS_IDLE:
                idle = self._idle.setdefault(dbname, [])
                if len(idle) < self._max_idle:
                    idle.append(cnx)
                    return
        # Closed, left inside a transaction block by its borrower, or one too many.
        cnx.close()

    @contextmanager
    def cursor(self, dbname):
        """A cursor on an autocommit connection to ``dbname``, lent for the block."""
        pid = os.getpid()
        cnx = self._take(dbname)
        try:
            with cnx.cursor() as cr:
                yield cr
        except psycopg2.Error as exc:
            if _ends_session(exc):
                cnx.close()  # the session is gone or going: never lend it again
            raise
        finally:
            self._give_back(dbname, cnx, pid)

    def close_all(self):
        """Close this process's idle connections (tests, or a database about to be dropped)."""
        with self._lock:
            self._forget_inherited()
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for cnx in connections:
                cnx.close()


def _is_alive(cnx):
    """Whether an idle connection may be lent: open, and not ended by the server.

    An idle session is sent nothing unless the server ended it (restart,
    pg_terminate_backend, idle_session_timeout); psycopg2's own poll() does not read an
    idle connection, so it cannot tell.
    """
    if cnx.closed:
        return False
    try:
        if not hasattr(select, "poll"):  # Windows
            return not select.select([cnx.fileno()], [], [], 0)[0]
        poller = select.poll()
        poller.register(cnx.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg2.Error):
        return False


def _ends_session(exc):
    """Errors after which the session cannot be trusted: connection exceptions (class 08),
    operator intervention (57P: shutdown, terminated backend) or a lost connection. A failed
    statement (a constraint, a cancelled query, a lock timeout) leaves an autocommit session
    as good as new."""
    code = exc.pgcode or ""
    return code.startswith(("08", "57P")) or isinstance(exc, psycopg2.InterfaceError) or not code
