"""Bindings: the external id of an Odoo record on a connector, read and written like OCA's binder."""

from psycopg2 import IntegrityError

from odoo.exceptions import AccessError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import IntegrationHubCase


@tagged("post_install", "-at_install")
class TestBinding(IntegrationHubCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connector = cls._create_connector()
        cls.Binding = cls.env["integration.binding"]
        cls.Partner = cls.env["res.partner"]
        cls.alice, cls.bob = cls.Partner.create([{"name": "Alice"}, {"name": "Bob"}])

    def test_bind_then_look_up_both_ways(self):
        self.assertFalse(self.Binding._to_internal(self.connector, "res.partner", "C-1"))
        self.assertIsNone(self.Binding._to_external(self.connector, self.alice))
        binding = self.Binding._bind(self.connector, self.alice, "C-1")
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", "C-1"), self.alice)
        self.assertEqual(self.Binding._to_external(self.connector, self.alice), "C-1")
        self.assertTrue(binding.sync_date)
        # Integer ids from a JSON body find the same binding as their text.
        self.Binding._bind(self.connector, self.bob, 1042)
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", 1042), self.bob)
        other = self._create_connector()
        self.assertFalse(self.Binding._to_internal(other, "res.partner", "C-1"), "per connector")
        self.assertFalse(self.Binding._to_internal(self.connector, "res.company", "C-1"), "per model")

    def test_binding_again_is_idempotent(self):
        first = self.Binding._bind(self.connector, self.alice, "C-1", payload={"name": "Alice"})
        again = self.Binding._bind(self.connector, self.alice, "C-1", payload={"name": "Alice"})
        self.assertEqual(first, again)
        self.assertEqual(self.Binding.search_count([("connector_id", "=", self.connector.id)]), 1)

    def test_rebinding_moves_an_id_instead_of_duplicating(self):
        self.Binding._bind(self.connector, self.alice, "C-1")
        self.Binding._bind(self.connector, self.bob, "C-2")
        # The remote now says C-1 is Bob (it merged its customers): one binding per id and record.
        self.Binding._bind(self.connector, self.bob, "C-1")
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", "C-1"), self.bob)
        self.assertFalse(self.Binding._to_internal(self.connector, "res.partner", "C-2"))
        self.assertEqual(self.Binding._to_external(self.connector, self.bob), "C-1")
        self.assertIsNone(self.Binding._to_external(self.connector, self.alice), "Alice lost the id to Bob")
        self.assertEqual(self.Binding.search_count([("connector_id", "=", self.connector.id)]), 1)
        # A record given a new remote id keeps one binding.
        self.Binding._bind(self.connector, self.alice, "C-9")
        self.assertEqual(self.Binding._to_external(self.connector, self.alice), "C-9")
        self.Binding._bind(self.connector, self.alice, "C-10")
        self.assertEqual(self.Binding._to_external(self.connector, self.alice), "C-10")
        self.assertFalse(self.Binding._to_internal(self.connector, "res.partner", "C-9"))
        self.assertEqual(self.Binding.search_count([("connector_id", "=", self.connector.id)]), 2)

    def test_unchanged_payload_is_recognised_whatever_the_key_order(self):
        self.Binding._bind(self.connector, self.alice, "C-1", payload={"name": "Alice", "tags": ["a", "b"]})
        self.assertTrue(self.Binding._is_unchanged(self.connector, self.alice, {"tags": ["a", "b"], "name": "Alice"}))
        self.assertFalse(self.Binding._is_unchanged(self.connector, self.alice, {"name": "Alice", "tags": ["b", "a"]}))
        self.assertFalse(self.Binding._is_unchanged(self.connector, self.bob, {"name": "Bob"}), "never bound")

    def test_deleted_records_leave_tombstones(self):
        self.Binding._bind(self.connector, self.alice, "C-1", payload={"name": "Alice"})
        self.assertEqual(self.Binding._mark_deleted(self.connector, "res.partner", self.alice.ids), 1)
        self.assertFalse(self.Binding._to_internal(self.connector, "res.partner", "C-1"))
        self.assertIsNone(self.Binding._to_external(self.connector, self.alice))
        self.assertFalse(self.Binding._is_unchanged(self.connector, self.alice, {"name": "Alice"}))
        tombstone = self.Binding.search([("external_id", "=", "C-1")])
        self.assertTrue(tombstone.is_deleted)
        self.assertFalse(tombstone.action_open_related())
        # Bound again (the record came back): alive again.
        self.Binding._bind(self.connector, self.alice, "C-1")
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", "C-1"), self.alice)

    def test_long_and_unstorable_ids_are_kept_distinct(self):
        long_a, long_b = "X" * 400 + "-a", "X" * 400 + "-b"
        self.Binding._bind(self.connector, self.alice, long_a)
        self.Binding._bind(self.connector, self.bob, long_b)
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", long_a), self.alice)
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", long_b), self.bob)
        self.Binding._bind(self.connector, self.alice, "nul\x00id")
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", "nul\x00id"), self.alice)

    def test_one_binding_per_external_id_and_per_record(self):
        self.Binding._bind(self.connector, self.alice, "C-1")
        with mute_logger("odoo.sql_db"), self.assertRaises(IntegrityError), self.env.cr.savepoint():
            self.Binding.create(
                {
                    "connector_id": self.connector.id,
                    "res_model": "res.partner",
                    "res_id": self.bob.id,
                    "external_id": "C-1",
                }
            )
        with mute_logger("odoo.sql_db"), self.assertRaises(IntegrityError), self.env.cr.savepoint():
            self.Binding.create(
                {
                    "connector_id": self.connector.id,
                    "res_model": "res.partner",
                    "res_id": self.alice.id,
                    "external_id": "C-7",
                }
            )

    def test_operators_read_managers_correct(self):
        binding = self.Binding._bind(self.connector, self.alice, "C-1")
        self.assertEqual(binding.with_user(self.operator).external_id, "C-1")
        with self.assertRaises(AccessError):
            binding.with_user(self.operator).write({"external_id": "C-2"})
        binding.with_user(self.manager).write({"external_id": "C-2"})
        self.assertEqual(self.Binding._to_internal(self.connector, "res.partner", "C-2"), self.alice)
