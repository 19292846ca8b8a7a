"""The addon's own autocommit connections (shared state, webhook inbox), on PostgreSQL."""

import os
from unittest.mock import patch

import psycopg2

from odoo.tests import TransactionCase, tagged

from ..core import autocommit
from ..core.autocommit import AutocommitPool, _ends_session
from ..models.integration_connector_state import connect


@tagged("post_install", "-at_install")
class TestAutocommitPool(TransactionCase):
    def setUp(self):
        super().setUp()
        self.dbname = self.env.cr.dbname
        self.pool = AutocommitPool(
            connect,
            settings=["SET application_name TO 'integration_hub pool test'"],
            prepared={"ih_pool_test_add": (["int4", "int4"], "SELECT $1 + $2")},
            max_idle=2,
        )
        self.addCleanup(self.pool.close_all)

    def _backend(self, cr):
        cr.execute("SELECT pg_backend_pid()")
        return cr.fetchone()[0]

    def test_session_kept_between_uses(self):
        with self.pool.cursor(self.dbname) as cr:
            first = self._backend(cr)
            cr.execute("EXECUTE ih_pool_test_add(%s, %s)", [2, 3])
            self.assertEqual(cr.fetchone()[0], 5)
        with self.pool.cursor(self.dbname) as cr:
            self.assertEqual(self._backend(cr), first, "the idle connection is lent again")
            cr.execute("EXECUTE ih_pool_test_add(%s, %s)", [40, 2])
            self.assertEqual(cr.fetchone()[0], 42, "still prepared: nothing reset the session")
            cr.execute("SHOW application_name")
            self.assertEqual(cr.fetchone()[0], "integration_hub pool test")

    def test_each_statement_commits_outside_the_test_transaction(self):
        with self.pool.cursor(self.dbname) as cr:
            cr.execute("CREATE TABLE IF NOT EXISTS ih_pool_test (value int)")
        self.addCleanup(self._drop_table)
        with self.pool.cursor(self.dbname) as cr:
            cr.execute("INSERT INTO ih_pool_test VALUES (7)")
        with connect(self.dbname) as other, other.cursor() as cr:
            cr.execute("SELECT value FROM ih_pool_test")
            self.assertEqual(cr.fetchall(), [(7,)], "visible to another session: committed")

    def _drop_table(self):
        with self.pool.cursor(self.dbname) as cr:
            cr.execute("DROP TABLE IF EXISTS ih_pool_test")

    def test_nested_uses_get_connections_of_their_own(self):
        with self.pool.cursor(self.dbname) as outer, self.pool.cursor(self.dbname) as inner:
            self.assertNotEqual(self._backend(outer), self._backend(inner))
        with (
            self.pool.cursor(self.dbname) as one,
            self.pool.cursor(self.dbname) as two,
            self.pool.cursor(self.dbname) as three,
        ):
            backends = {self._backend(one), self._backend(two), self._backend(three)}
        self.assertEqual(len(backends), 3)
        self.assertEqual(len(self.pool._idle[self.dbname]), 2, "no more idle connections than max_idle")

    def test_connection_closed_by_the_server_is_replaced(self):
        with self.pool.cursor(self.dbname) as cr:
            first = self._backend(cr)
        with connect(self.dbname) as other, other.cursor() as cr:
            cr.execute("SELECT pg_terminate_backend(%s, 5000)", [first])  # waits until it is gone
            self.assertTrue(cr.fetchone()[0])
        with self.pool.cursor(self.dbname) as cr:
            self.assertNotEqual(self._backend(cr), first)
            cr.execute("EXECUTE ih_pool_test_add(%s, %s)", [1, 1])
            self.assertEqual(cr.fetchone()[0], 2, "the new connection is prepared too")

    def test_a_failed_statement_keeps_the_session_a_lost_one_does_not(self):
        with self.assertRaises(psycopg2.errors.DivisionByZero), self.pool.cursor(self.dbname) as cr:
            kept = self._backend(cr)
            cr.execute("SELECT 1 / 0")
        with self.pool.cursor(self.dbname) as cr:
            self.assertEqual(self._backend(cr), kept, "an autocommit session survives a failed statement")
        with self.assertRaises(psycopg2.OperationalError), self.pool.cursor(self.dbname) as cr:
            cr.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        self.assertEqual(self.pool._idle[self.dbname], [], "the lost session was not given back")
        with self.pool.cursor(self.dbname) as cr:
            self.assertNotEqual(self._backend(cr), kept)

    def test_a_session_left_in_a_transaction_is_not_lent_again(self):
        with self.pool.cursor(self.dbname) as cr:
            left = self._backend(cr)
            cr.execute("BEGIN")
        with self.pool.cursor(self.dbname) as cr:
            self.assertNotEqual(self._backend(cr), left)

    def test_a_forked_child_never_uses_the_parents_connections(self):
        with self.pool.cursor(self.dbname) as cr:
            parent_backend = self._backend(cr)
        # As seen from a child made by fork (Odoo's prefork workers): another process id.
        with patch.object(autocommit.os, "getpid", return_value=os.getpid() + 100000):
            with self.pool.cursor(self.dbname) as cr:
                child_backend = self._backend(cr)
            self.pool.close_all()  # the child's own only
        self.assertNotEqual(child_backend, parent_backend)
        with connect(self.dbname) as other, other.cursor() as cr:
            cr.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [parent_backend])
            self.assertEqual(cr.fetchone()[0], 1, "the parent's session was neither used nor ended")
        self.addCleanup(lambda: [cnx.close() for cnx in self.pool._inherited])


class _Failure(psycopg2.Error):
    """A psycopg2 error with the SQLSTATE a server would have sent."""

    def __init__(self, pgcode):
        super().__init__("failure")
        self._code = pgcode

    @property
    def pgcode(self):
        return self._code


class TestSessionEndingErrors(TransactionCase):
    def test_which_errors_end_a_session(self):
        for pgcode in ("08006", "08003", "57P01", "57P02", None):
            self.assertTrue(_ends_session(_Failure(pgcode)), pgcode)
        self.assertTrue(_ends_session(psycopg2.InterfaceError("connection already closed")))
        for pgcode in ("22012", "57014", "55P03", "40001", "23505", "26000"):
            self.assertFalse(_ends_session(_Failure(pgcode)), pgcode)
