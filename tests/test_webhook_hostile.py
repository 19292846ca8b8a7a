"""Hostile webhook deliveries: validly signed, yet odd or malicious bodies and headers.

The README's table "Hostile input" lists what each one gets; these tests hold the code to it.
"""

import base64
import json
import os
import re
import select
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from unittest.mock import patch

import requests

from odoo import SUPERUSER_ID, api, sql_db
from odoo.tests import HttpCase, tagged
from odoo.tests.common import BaseCase
from odoo.tools import mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from ..const import DISPATCH_IDENTITY_KEY, KEYS_ENV_VARIABLE
from ..core.body import BODY_GRACE_SECONDS, read_body
from ..core.exceptions import JSONNestingError, WebhookBodyTimeout
from ..core.jsonpath import field_value, json_path_get
from ..core.jsonutil import (
    MAX_DEPTH,
    loads,
    loads_or_none,
    nesting_depth_exceeds,
    payload_bytes,
    payload_text,
    pretty,
    pretty_payload,
)
from ..core.redact import redact_text
from ..core.textsafe import EVENT_ID_LIMIT, bounded_text, clean_text, is_storable, unique_key
from ..sandbox import webhook_senders as senders
from .common import ADDON_LOGGER, KEY_A, CommittedConnector, IntegrationHubMixin, errors_logged, odoo_server, run_job


def nested(depth, inner=b""):
    return b"[" * depth + inner + b"]" * depth


class TestHostileTextAndJSON(BaseCase):
    """The plain helpers (``core/textsafe.py``, ``core/jsonutil.py``, ``core/jsonpath.py``), without a database."""

    def test_text_is_made_storable_visibly(self):
        self.assertEqual(clean_text("a\x00b\ud800c\udfff"), "a\ufffdb\ufffdc\ufffd")
        self.assertEqual(clean_text("plain: é, 😀, \ufffd"), "plain: é, 😀, \ufffd")
        self.assertFalse(is_storable("a\x00"))
        self.assertTrue(is_storable("a\ufffd"))
        self.assertEqual(bounded_text("t" * 10240, 128), "t" * 127 + "\u2026")
        self.assertEqual(bounded_text("short\x00", 128), "short\ufffd")
        self.assertEqual(bounded_text(None, 128), "")
        self.assertEqual(redact_text("error about a\x00b"), "error about a\ufffdb", "stored error messages too")

    def test_identifiers_stay_unique_and_stable_when_shortened_or_cleaned(self):
        self.assertEqual(unique_key("evt_123"), "evt_123", "a usable id is kept as sent")
        first, second = "A" * 5000 + "x" * 5000, "A" * 5000 + "y" * 5000
        keys = unique_key(first), unique_key(second)
        self.assertNotEqual(keys[0], keys[1], "ids sharing their first 5,000 characters stay two ids")
        for key in keys:
            self.assertEqual(len(key), EVENT_ID_LIMIT)
            self.assertTrue(key.startswith("A" * 150))
            self.assertRegex(key, "\u2026sha256:[0-9a-f]{64}$")
            self.assertEqual(unique_key(key), key, "a key given again is unchanged")
        self.assertEqual(unique_key(first), keys[0], "the same id always gives the same key")
        self.assertNotEqual(unique_key("a\x00b"), unique_key("a\ufffdb"), "a NUL does not merge two ids")
        self.assertTrue(unique_key("a\x00b").startswith("a\ufffdb\u2026sha256:"))
        self.assertTrue(is_storable(unique_key("\ud800" * 300)))

    def test_nesting_is_bounded_before_the_parser_recurses(self):
        self.assertEqual(loads(nested(MAX_DEPTH)), loads(nested(MAX_DEPTH)))
        for body in (nested(50000), nested(MAX_DEPTH + 1), b'{"a":' * 200 + b"1" + b"}" * 200):
            with self.assertRaisesRegex(JSONNestingError, f"deeper than {MAX_DEPTH} levels"):
                loads(body)
        # The route's parser (id and type only, on the sender's clock) is json's C parser as
        # is: what nests past the recursion limit is no JSON to it, what nests a little past
        # MAX_DEPTH is read there and refused by processing (loads above).
        self.assertIsNone(loads_or_none(nested(50000)))
        self.assertEqual(loads_or_none(nested(MAX_DEPTH + 1)), json.loads(nested(MAX_DEPTH + 1)))
        # Brackets inside strings are text, escaped quotes included.
        text = json.dumps({"s": "[" * 1000 + '\\"' + "{" * 1000})
        self.assertFalse(nesting_depth_exceeds(text))
        self.assertEqual(loads(text)["s"][:3], "[[[")
        self.assertTrue(nesting_depth_exceeds('["a\\\\",' + "[" * 200), "a string can end in an escaped backslash")
        self.assertFalse(nesting_depth_exceeds('"' + "[" * 200), "an unterminated string: json stops there")
        # Linear whatever the text: 400,000 escaped quotes and brackets in an unterminated string.
        started = time.monotonic()
        for tail in ("", "\\"):
            hostile = '"' + '\\"[' * 200000 + tail
            self.assertFalse(nesting_depth_exceeds(hostile))
            self.assertIsNone(loads_or_none(hostile))
        self.assertLess(time.monotonic() - started, 5, "a quadratic scan takes hours on this")
        self.assertTrue(issubclass(JSONNestingError, ValueError))

    def test_numbers_beyond_float_and_int_limits_parse_exactly(self):
        document = loads(b'{"float": 1e400, "int": ' + b"9" * 5000 + b', "small": 12, "real": 1.5}')
        self.assertEqual(document["float"], Decimal("1e400"))
        self.assertEqual(document["int"], Decimal("9" * 5000))
        self.assertEqual((document["small"], document["real"]), (12, 1.5))
        self.assertIsInstance(document["small"], int)
        self.assertEqual(str(document["int"]), "9" * 5000, "the digits survive as text")

    def test_not_utf8_duplicates_bom_and_nul(self):
        self.assertEqual(loads(b'{"name": "Caf\xe9"}'), {"name": "Caf\ufffd"})
        self.assertEqual(loads(b'\xef\xbb\xbf{"a": 1}'), {"a": 1}, "a UTF-8 byte-order mark is skipped")
        self.assertEqual(loads(b'{"type": "first", "type": "second"}'), {"type": "second"}, "the last one wins")
        self.assertEqual(loads(b'{"t": "a\\u0000b"}'), {"t": "a\x00b"}, "kept as sent by default")
        cleaned = loads(b'{"t\\u0000": ["a\\u0000b", {"x": "\\ud800"}], "n": null}', clean=True)
        self.assertEqual(cleaned, {"t\ufffd": ["a\ufffdb", {"x": "\ufffd"}], "n": None})
        with self.assertRaisesRegex(ValueError, "Invalid control character"):
            loads(b'{"t": "a\x00b"}')  # a raw NUL byte in a string is not JSON
        for not_json in (b"", b"this is not JSON", b"{"):
            self.assertIsNone(loads_or_none(not_json))

    def test_a_body_is_read_at_a_minimum_pace(self):
        def reader(chunks, clock, seconds_per_read):
            def read1(size):
                clock[0] += seconds_per_read
                chunk = chunks.pop(0) if chunks else b""
                if isinstance(chunk, Exception):
                    raise chunk
                return chunk[:size]

            return read1

        clock = [0.0]
        # A whole body in one read, or a 1 MiB one in 16 KiB reads of 0.05 s each (320 KiB/s).
        self.assertEqual(read_body(reader([b'{"a": 1}'], clock, 0.001), 8, clock=lambda: clock[0]), b'{"a": 1}')
        big = [b"x" * 16384] * 64
        self.assertEqual(len(read_body(reader(big, clock, 0.05), 1 << 20, clock=lambda: clock[0])), 1 << 20)
        # A byte a second (slowloris): cut once past the grace period, not after the 300 bytes.
        clock = [0.0]
        with self.assertRaisesRegex(WebhookBodyTimeout, r"too slowly: 3 of 300 bytes in 3\.0 s"):
            read_body(reader([b"x"] * 300, clock, 1.0), 300, clock=lambda: clock[0])
        self.assertLessEqual(clock[0], BODY_GRACE_SECONDS + 1)
        for chunks in ([b"abc"], [b"abc", TimeoutError("timed out")]):  # ended, or stalled past the socket timeout
            with self.assertRaisesRegex(WebhookBodyTimeout, "stopped after 3 of its 10 bytes"):
                read_body(reader(chunks, [0.0], 0.0), 10)

    def test_a_stalled_body_is_cut_on_a_socket_without_timeout(self):
        # Odoo's threaded server (scripts/run) hands requests sockets without a timeout: the
        # pace bounds each wait, so a sender that stops mid-body does not hold the thread.
        receiving, sending = socket.socketpair()
        self.addCleanup(receiving.close)
        self.addCleanup(sending.close)
        self.assertIsNone(receiving.gettimeout())
        sending.sendall(b"abc")
        started = time.monotonic()
        with self.assertRaisesRegex(WebhookBodyTimeout, "stopped after 3 of its 10 bytes"):
            read_body(receiving.makefile("rb").read1, 10, grace=0.5, wait_at_most=receiving.settimeout)
        self.assertLess(time.monotonic() - started, 5)

    def test_json_path_lookups(self):
        document = {"data": {"items": [{"sku": "A"}, {"sku": "B"}], "id": 0}}
        self.assertEqual(json_path_get(document, "data.items.1.sku"), "B")
        self.assertEqual(json_path_get(document, "data.id"), 0)
        for path in ("data.items.2.sku", "data.items.x", "data.items.\u00b2", "nothing.here", "data.id.more"):
            self.assertIsNone(json_path_get(document, path), path)

    def test_field_values_fit_their_columns(self):
        self.assertEqual(field_value("A\x00B", "char"), "A\ufffdB")
        self.assertEqual(field_value(Decimal("9" * 5000), "char"), "9" * 5000)
        self.assertEqual(field_value(Decimal("1e400"), "char"), "1E+400")
        as_text = field_value({"a": "\x00", "n": Decimal("1e400")}, "text")
        self.assertEqual(as_text, '{"a": "\\u0000", "n": "1E+400"}')
        self.assertEqual(field_value(" 42 ", "integer"), 42)
        self.assertEqual(field_value(2.5, "float"), 2.5)
        self.assertIs(field_value(None, "char"), False)
        for value, ttype, reason in (
            (Decimal("1e400"), "float", "not a finite number"),
            (float("inf"), "monetary", "not a finite number"),
            ("1e400", "float", "not a finite number"),
            (Decimal("9" * 5000), "integer", "out of the integer range"),
            (Decimal("1e999999999"), "integer", "out of the integer range"),
            (2**31, "integer", "out of the integer range"),
            (float("nan"), "integer", "not a finite number"),
            ("9" * 5000, "integer", "digits"),
            ("2024-13-01\x00", "date", "month"),
        ):
            with self.subTest(value=str(value)[:20], ttype=ttype), self.assertRaisesRegex(ValueError, reason):
                field_value(value, ttype)

    def test_payload_kept_as_signed(self):
        for body, as_text in (
            (b'{"a": "\\u0000"}', True),
            (b'{"a": "\x00"}', False),
            (b'{"a": "Caf\xe9"}', False),
            (b"", True),
        ):
            payload, is_base64 = payload_text(body)
            self.assertEqual(is_base64, not as_text)
            self.assertTrue(is_storable(payload))
            self.assertEqual(payload_bytes(payload, is_base64), body, "the stored payload is the signed bytes")

    def test_payload_shown_readably(self):
        self.assertEqual(pretty('{"a": [1]}'), '{\n  "a": [\n    1\n  ]\n}')
        self.assertEqual(pretty(nested(50000).decode()), nested(50000).decode(), "too deep: shown as received")
        self.assertEqual(pretty('{"n": 1e400}'), '{"n": 1e400}', "shown as sent, not re-serialized")
        self.assertEqual(pretty("not json"), "not json")
        shown = pretty_payload(base64.b64encode(b'{"name": "Caf\xe9"}').decode(), True)
        self.assertEqual(json.loads(shown), {"name": "Caf\ufffd"})
        raw_nul = base64.b64encode(b'{"a": "\x00"}').decode()
        self.assertEqual(pretty_payload(raw_nul, True), raw_nul, "not JSON: the base64 as stored")


# --- Through the real route, then the dispatcher and a processing job ---------------------

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PLAIN_SECRET = "plain-secret-for-tests"
ID_DIGEST = "\u2026sha256:[0-9a-f]{64}"


@dataclass(frozen=True)
class Hostile:
    """One validly signed hostile delivery, and what it must get.

    Every one is answered 202 and stored (the signature was checked on the raw bytes),
    then processed by a rule "*" that creates or updates a contact by ``data.id``.
    """

    name: str
    body: bytes
    profile: str = "standard_webhooks"
    headers: dict = field(default_factory=dict)  # sent besides the signature's
    content_type: str | None = "application/json"
    delivery_id: str | None = None  # the signed id header (Standard Webhooks, GitHub)
    github_event: str = "customer.created"
    # Stored: the id (a regular expression; default: the delivery id as sent), the type,
    # whether the payload is kept as base64 (it is the signed bytes either way).
    event_id: str | None = None
    event_type: str = ""
    as_base64: bool = False
    # Processed: "done" with the contact written (ref, name), or "failed" with this error.
    outcome: str = "done"
    error: str = ""
    contact: tuple = ()


def _customer(ref, name, event_type="customer.created", **data):
    return json.dumps({"type": event_type, "data": {"id": ref, "name": name, **data}}).encode()


CUSTOMER = "customer.created"
CORPUS = (
    Hostile("not JSON", b"this is not JSON", outcome="failed", error="not valid JSON"),
    Hostile("empty body", b"", outcome="failed", error="not valid JSON"),
    Hostile(
        "invalid UTF-8",
        b'{"type": "customer.created", "data": {"id": "H-3", "name": "Caf\xe9"}}',
        event_type=CUSTOMER,
        as_base64=True,
        contact=("H-3", "Caf\ufffd"),
    ),
    Hostile(
        "NUL escaped in JSON strings (type, id, value)",
        b'{"type": "customer\\u0000created", "data": {"id": "H-4\\u0000", "name": "Ada\\u0000Lovelace"}}',
        event_type="customer\ufffdcreated",
        contact=("H-4\ufffd", "Ada\ufffdLovelace"),
    ),
    Hostile(
        "raw NUL byte in a JSON string",
        b'{"type": "customer.created", "data": {"id": "H-5", "name": "A\x00B"}}',
        as_base64=True,
        outcome="failed",
        error="Invalid control character",
    ),
    Hostile(
        "lone surrogates escaped in JSON strings",
        b'{"type": "customer.\\ud800", "data": {"id": "H-6", "name": "\\udfffSix"}}',
        event_type="customer.\ufffd",
        contact=("H-6", "\ufffdSix"),
    ),
    Hostile(
        "NUL in the signed id header",
        _customer("H-7", "Seven"),
        delivery_id="evt\x00H-7",
        event_id=f"evt\ufffdH-7{ID_DIGEST}",
        event_type=CUSTOMER,
        contact=("H-7", "Seven"),
    ),
    Hostile(
        "NUL in the JSON event id (Stripe)",
        b'{"id": "evt_\\u0000", "type": "customer.created", "data": {"id": "H-8", "name": "Eight"}}',
        profile="stripe",
        event_id=f"evt_\ufffd{ID_DIGEST}",
        event_type=CUSTOMER,
        contact=("H-8", "Eight"),
    ),
    Hostile("50,000 nested arrays", nested(50000), outcome="failed", error="deeper than 128 levels"),
    Hostile(
        "10 KB event type",
        _customer("H-10", "Ten", event_type="customer." + "x" * 10240),
        event_type="customer." + "x" * 118 + "\u2026",
        contact=("H-10", "Ten"),
    ),
    Hostile(
        "60 KB header",
        _customer("H-11", "Eleven"),
        headers={"X-Padding": "p" * 61440},
        event_type=CUSTOMER,
        contact=("H-11", "Eleven"),
    ),
    Hostile(
        "60 KB signed id header",
        _customer("H-12", "Twelve"),
        delivery_id="i" * 61440,
        event_id="i{183}" + ID_DIGEST,
        event_type=CUSTOMER,
        contact=("H-12", "Twelve"),
    ),
    Hostile(
        "60 KB event type header (GitHub)",
        json.dumps({"data": {"id": "H-13", "name": "Thirteen"}}).encode(),
        profile="github",
        github_event="e" * 61440,
        event_type="e" * 127 + "\u2026",
        contact=("H-13", "Thirteen"),
    ),
    Hostile(
        "duplicate keys",
        b'{"type": "customer.created", "type": "customer.updated", "data": {"id": "H-14", "name": "First", '
        b'"name": "Last"}}',
        event_type="customer.updated",
        contact=("H-14", "Last"),
    ),
    Hostile(
        "wrong content type: text/plain",
        _customer("H-15", "Fifteen"),
        content_type="text/plain",
        event_type=CUSTOMER,
        contact=("H-15", "Fifteen"),
    ),
    Hostile(
        "wrong content type: a form",
        _customer("H-16", "Sixteen"),
        content_type="application/x-www-form-urlencoded",
        event_type=CUSTOMER,
        contact=("H-16", "Sixteen"),
    ),
    Hostile(
        "wrong content type: multipart without boundary",
        _customer("H-17", "Seventeen"),
        content_type="multipart/form-data",
        event_type=CUSTOMER,
        contact=("H-17", "Seventeen"),
    ),
    Hostile(
        "no content type",
        _customer("H-18", "Eighteen"),
        content_type=None,
        event_type=CUSTOMER,
        contact=("H-18", "Eighteen"),
    ),
    Hostile(
        "1e400 mapped to a float field",
        b'{"type": "customer.created", "data": {"id": "H-19", "name": "Nineteen", "amount": 1e400}}',
        event_type=CUSTOMER,
        outcome="failed",
        error="not a finite number",
    ),
    Hostile(
        "5,000-digit integer mapped to an integer field",
        b'{"type": "customer.created", "data": {"id": "H-20", "name": "Twenty", "count": ' + b"9" * 5000 + b"}}",
        event_type=CUSTOMER,
        outcome="failed",
        error="out of the integer range",
    ),
    Hostile(
        "5,000-digit integer as the external id",
        b'{"type": "customer.created", "data": {"id": ' + b"9" * 5000 + b', "name": "Digits"}}',
        event_type=CUSTOMER,
        contact=("9" * 5000, "Digits"),
    ),
)


def select_readable(sock, wait=0):
    """Whether ``sock`` has something to read (an answer, or its end) within ``wait`` seconds."""
    return bool(select.select([sock], [], [], wait)[0])


@contextmanager
def no_error_logged(test):
    """Fail ``test`` if anything (our code, Odoo's HTTP layer, werkzeug) logs at ERROR or
    above meanwhile, which is where tracebacks go; other output is left as it is."""
    with errors_logged() as records:
        yield
    test.assertEqual([f"{r.name}: {r.getMessage()[:300]}" for r in records], [], "logged at ERROR")


@tagged("post_install", "-at_install")
class TestHostileDeliveries(IntegrationHubMixin, HttpCase):
    """Each hostile delivery through the route, then the dispatcher and its processing job."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        cls.Event = cls.env["integration.webhook.event"]
        cls.connectors = {}
        for profile, secret in (
            ("standard_webhooks", STANDARD_SECRET),
            ("stripe", PLAIN_SECRET),
            ("github", PLAIN_SECRET),
        ):
            connector = cls._create_connector(webhook_signature=profile)
            connector.webhook_secret = secret
            cls._contact_rule(connector)
            cls.connectors[profile] = connector

    @classmethod
    def _contact_rule(cls, connector):
        field_id = cls.env["ir.model.fields"]._get
        mapped = {"name": "data.name", "partner_latitude": "data.amount", "color": "data.count"}
        return cls.env["integration.webhook.rule"].create(
            {
                "connector_id": connector.id,
                "event_type": "*",
                "action_type": "upsert",
                "model_id": cls.env["ir.model"]._get("res.partner").id,
                "match_field_id": field_id("res.partner", "ref").id,
                "match_path": "data.id",
                "field_ids": [
                    (0, 0, {"field_id": field_id("res.partner", name).id, "json_path": path})
                    for name, path in mapped.items()
                ],
            }
        )

    def _deliver(self, case, delivery_id, connector=None):
        """POST the case signed as its profile's sender would; returns the response."""
        connector = connector or self.connectors[case.profile]
        if connector.webhook_signature == "standard_webhooks":
            headers = senders.standard_webhooks_headers(STANDARD_SECRET, case.body, delivery_id, int(time.time()))
        elif connector.webhook_signature == "stripe":
            headers = senders.stripe_headers(PLAIN_SECRET, case.body, int(time.time()))
        else:
            headers = senders.github_headers(PLAIN_SECRET, case.body, delivery_id, case.github_event)
        headers.update(case.headers)
        if case.content_type:
            headers["Content-Type"] = case.content_type
        # Posted as is (url_open would send an empty body as a GET).
        return self.opener.post(
            f"{self.base_url()}/integration/webhook/{connector.code}", data=case.body, headers=headers, timeout=60
        )

    def _process(self, event):
        """The dispatcher gives the event its job; the job runs as queue_job's runner runs it."""
        self.Event._job_dispatch_received()
        event.invalidate_recordset()
        self.assertEqual(event.state, "queued")
        run_job(self.env, event.job_id.uuid)
        event.invalidate_recordset()

    def test_each_hostile_delivery_gets_its_documented_outcome(self):
        for number, case in enumerate(CORPUS):
            with self.subTest(case=case.name):
                delivery_id = case.delivery_id or f"hostile-{number}"
                with no_error_logged(self):
                    response = self._deliver(case, delivery_id)
                self.assertEqual(response.status_code, 202, response.text[:300])
                answer = response.json()
                event = self.Event.browse(answer["reference"])
                self.assertEqual(answer, {"status": "accepted", "event_id": event.event_id, "reference": event.id})
                # Stored: identified, text storable and bounded, the payload the signed bytes.
                self.assertRegex(event.event_id, "^" + (case.event_id or re.escape(delivery_id)) + "$")
                self.assertLessEqual(len(event.event_id), 255)
                self.assertEqual(event.event_type or "", case.event_type)
                self.assertEqual(event.payload_is_base64, case.as_base64)
                self.assertEqual(payload_bytes(event.payload, event.payload_is_base64), case.body)
                self.assertEqual(event.payload_size, len(case.body))
                stored_headers = json.loads(event.headers)
                self.assertTrue(all(len(value) < 600 for value in stored_headers.values()), "headers bounded")
                # The form shows it without failing (pretty-printing parses it again).
                self.assertTrue(event.payload_pretty is not None and event.headers_pretty)
                with no_error_logged(self):
                    self._process(event)
                self.assertEqual(event.state, case.outcome, event.last_error)
                if case.outcome == "failed":
                    self.assertIn(case.error, event.last_error)
                    self.assertTrue(is_storable(event.last_error))
                    self.assertEqual(event.job_id.state, "failed")
                else:
                    ref, name = case.contact
                    contact = self.env["res.partner"].search([("ref", "=", ref)])
                    self.assertEqual(contact.name, name)
                    self.assertEqual((event.res_model, event.res_id), ("res.partner", contact.id))

    def test_long_ids_sharing_their_beginning_stay_two_events(self):
        # Before: ids were cut to their first 255 characters, so the second event was
        # answered 200 "duplicate" and never stored.
        first, second = "A" * 5000 + "-first", "A" * 5000 + "-second"
        for profile in ("stripe", "standard_webhooks"):  # the id in the JSON body; in a header
            with self.subTest(profile=profile):

                def deliver(event_id, profile=profile):
                    body = json.dumps({"id": event_id, "type": "long.id", "profile": profile}).encode()
                    return self._deliver(Hostile("long id", body, profile=profile), event_id)

                with no_error_logged(self):
                    responses = [deliver(event_id) for event_id in (first, second, first)]
                self.assertEqual([response.status_code for response in responses], [202, 202, 200])
                stored, other, again = (response.json() for response in responses)
                self.assertNotEqual(stored["reference"], other["reference"])
                self.assertEqual((again["status"], again["reference"]), ("duplicate", stored["reference"]))
                events = self.Event.browse([stored["reference"], other["reference"]])
                self.assertEqual(events.mapped("event_id"), [stored["event_id"], other["event_id"]])
                for event in events:
                    self.assertRegex(event.event_id, "^A{183}" + ID_DIGEST + "$")

    def test_ingest_called_by_code_with_a_raw_long_id_finds_its_duplicate(self):
        # Code calling _ingest directly (not through the route's _webhook_identify) passes
        # the id as the sender wrote it: the repeat is found by the stored form of the id.
        connector = self._create_connector(webhook_signature="none")
        receiver = connector._webhook_receiver(connector.code)
        raw_id = "evt-" + "x" * 300 + "\x00"
        stored, created = self.Event._ingest(receiver, b'{"n": 1}', {}, raw_id, "t")
        again, created_again = self.Event._ingest(receiver, b'{"n": 1}', {}, raw_id, "t")
        self.assertEqual((created, created_again), (True, False))
        self.assertEqual(again, stored)
        self.assertEqual(self.env["integration.webhook.duplicate"].search([("event_id", "=", stored)]).count, 1)

    def test_a_header_line_over_64_kib_never_reaches_the_route(self):
        # Python's http.server, under werkzeug and Odoo, refuses a header line over 65,536
        # bytes (431) before any WSGI code runs; Odoo 18's request handler then fails while
        # writing that answer (an AttributeError traceback logged by odoo.service.server)
        # and the connection closes unanswered. Not this addon's code; nothing is stored.
        case = Hostile("70 KB header", _customer("H-70", "Seventy"), headers={"X-Padding": "p" * 71680})
        with mute_logger("odoo.service.server", "werkzeug"), self.assertNoLogs(ADDON_LOGGER, "WARNING"):
            try:
                status = self._deliver(case, "hostile-70k").status_code
            except requests.ConnectionError:
                status = None  # closed without an answer (the sender retries later)
        self.assertIn(status, (None, 431))
        self.assertFalse(self.Event.search([("event_id", "=", "hostile-70k")]))

    def test_a_trickled_body_is_refused_408_without_holding_the_server(self):
        # A sender that declares a body and sends it a byte a second (slowloris), as JSON or
        # as a form (read before routing): answered 408 once behind the minimum pace.
        connector = self.connectors["github"]
        for content_type in ("application/json", "application/x-www-form-urlencoded"):
            with self.subTest(content_type=content_type), socket.create_connection(self._address(), 30) as sock:
                started = time.monotonic()
                sock.sendall(
                    f"POST /integration/webhook/{connector.code} HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: 60\r\n\r\n".encode()
                )
                answer = b""
                with mute_logger(ADDON_LOGGER):
                    for _second in range(60):
                        try:
                            sock.sendall(b"a")
                            time.sleep(1)
                        except OSError:
                            break  # closed by the server
                        if select_readable(sock):
                            break
                    answer = sock.recv(4096)
                elapsed = time.monotonic() - started
                self.assertTrue(answer.startswith(b"HTTP/1.1 408") or answer.startswith(b"HTTP/1.0 408"), answer)
                self.assertIn(b'"error": "timeout"', answer)
                self.assertIn(b"too slowly", answer)
                self.assertLess(elapsed, BODY_GRACE_SECONDS + 4, "cut after the grace period, not after 60 s")
                self.assertLess(self._seconds_until_dropped(sock), 3, "the sender goes on: dropped")
        # An oversized body, answered 413 unread, then trickled on: werkzeug's server discards
        # what is left of a body after the answer, for as long as it comes (each byte within
        # the socket's timeout); the connection is dropped instead.
        with socket.create_connection(self._address(), 30) as sock:
            sock.sendall(
                f"POST /integration/webhook/{connector.code} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {2 << 20}\r\n\r\n".encode()
                + b"a" * 65536
            )
            with mute_logger(ADDON_LOGGER):
                self.assertTrue(select_readable(sock, 10))
                self.assertIn(b" 413 ", sock.recv(4096).split(b"\r\n")[0] + b" ")
                self.assertLess(self._seconds_until_dropped(sock), 3, "not held while the trickle lasts")
        self.assertFalse(self.Event.search([("connector_id", "=", connector.id)]))

    @staticmethod
    def _seconds_until_dropped(sock, limit=10):
        started = time.monotonic()
        while time.monotonic() - started < limit:
            try:
                sock.sendall(b"a")
                if select_readable(sock, 0.5) and not sock.recv(4096):
                    break  # closed
            except OSError:
                break  # reset
        return time.monotonic() - started

    def _address(self):
        host, port = self.base_url().split("//", 1)[1].split(":")
        return host, int(port)

    def test_a_connector_code_with_nul_is_no_connector(self):
        # Before: the code reached SQL, PostgreSQL refused the NUL: a 500 for anyone.
        for path, content_type in (
            ("a%00b", "application/json"),
            ("a%00b", "application/x-www-form-urlencoded"),  # looked up before the route, too
            ("%ED%A0%80", "application/json"),  # not UTF-8
            ("UPPER", "application/json"),
        ):
            with self.subTest(path=path, content_type=content_type), no_error_logged(self):
                response = self.opener.post(
                    f"{self.base_url()}/integration/webhook/{path}",
                    data=b'{"type": "x"}',
                    headers={"Content-Type": content_type},
                    timeout=30,
                )
                self.assertEqual(response.status_code, 404)
                self.assertEqual(response.json()["error"], "not_found")

    def test_errors_and_notes_quoting_a_nul_are_stored_cleaned(self):
        # A handler's error message or note may quote the payload, NUL included: the
        # failure and the note are stored (cleaned), never a failed write.
        # One job per event: each event's failure is also its job's, stored by queue_job.
        connector = self._create_connector(webhook_signature="standard_webhooks", webhook_batch_size=1)
        connector.webhook_secret = STANDARD_SECRET

        def broken(connector, event):
            raise ValueError(f"cannot use {event._payload_json()['data']['name']!s} \ud800")

        def noting(connector, event):
            return f"kept {event.event_type} for {event._payload_json()['data']['name']}"

        def busy(connector, event):
            raise RetryableJobError(f"{event._payload_json()['data']['name']} is busy \ud800", seconds=30)

        handler = "_webhook_handle_generic_rest_order_created"
        events = {}
        for name in ("broken", "noting", "busy"):
            body = json.dumps({"type": "order.created", "data": {"name": f"{name}\x00"}}).encode()
            response = self._deliver(Hostile(name, body), f"evt-{name}", connector)
            self.assertEqual(response.status_code, 202, response.text[:300])
            events[name] = self.Event.browse(response.json()["reference"])
        for name, function in (("broken", broken), ("noting", noting), ("busy", busy)):
            with patch.object(type(connector), handler, function, create=True), no_error_logged(self):
                self._process(events[name])
        failed, done, retried = events["broken"], events["noting"], events["busy"]
        self.assertEqual(failed.state, "failed")
        self.assertIn("cannot use broken\ufffd \ufffd", failed.last_error)
        # queue_job records the failure too (its own write would fail on the raw text).
        self.assertEqual(failed.job_id.state, "failed")
        self.assertIn("ValueError: cannot use broken\ufffd \ufffd", failed.job_id.exc_message)
        error = self.env["integration.error"].search([("res_model", "=", failed._name), ("res_id", "=", failed.id)])
        self.assertIn("broken\ufffd", error.message)
        self.assertIn("broken\ufffd", " ".join(failed.message_ids.mapped("body")), "the chatter note")
        self.assertEqual((done.state, done.result_note), ("done", "kept order.created for noting\ufffd"))
        self.assertEqual((retried.state, retried.job_id.state), ("queued", "pending"), "tried again later")
        self.assertIn("busy\ufffd is busy \ufffd", retried.last_error)
        self.assertIn("busy\ufffd is busy \ufffd", retried.job_id.result)

    def test_a_real_server_stores_hostile_deliveries_through_its_inbox(self):
        # As deployed (no test mode): the route stores with the inbox's prepared statement
        # on a connection of its own, and commits before answering.
        dbname = self.env.cr.dbname
        code = "hostile-served"
        wanted = ("NUL escaped", "raw NUL byte", "lone surrogates", "NUL in the signed id", "50,000", "60 KB signed")
        cases = [case for case in CORPUS if case.name.startswith(wanted)]
        self.assertEqual(len(cases), len(wanted))
        self.addCleanup(self._delete_dispatchers, dbname)
        # The server reads its encryption key from the environment.
        with patch.dict(os.environ, {KEYS_ENV_VARIABLE: KEY_A}):
            values = {
                "name": "Hostile",
                "code": code,
                "base_url": "http://127.0.0.1:9/",
                "webhook_secret": STANDARD_SECRET,
            }
            committed = CommittedConnector(dbname, values)
            self.addCleanup(committed.delete)
            with odoo_server(dbname) as url:
                statuses = []
                for number, case in enumerate(cases):
                    delivery_id = case.delivery_id or f"served-{number}"
                    headers = senders.standard_webhooks_headers(
                        STANDARD_SECRET, case.body, delivery_id, int(time.time())
                    )
                    response = requests.post(
                        f"{url}/integration/webhook/{code}",
                        data=case.body,
                        headers={**headers, "Content-Type": "application/json"},
                        timeout=60,
                    )
                    statuses.append(response.status_code)
        self.assertEqual(statuses, [202] * len(cases))
        with sql_db.db_connect(dbname).cursor() as cr:
            cr.execute(
                "SELECT event_type, payload, payload_is_base64 FROM integration_webhook_event"
                " WHERE connector_id = %s ORDER BY id",
                [committed.id],
            )
            rows = cr.fetchall()
        self.assertEqual([row[0] or "" for row in rows], [case.event_type for case in cases])
        self.assertEqual([payload_bytes(row[1], row[2]) for row in rows], [case.body for case in cases])

    @staticmethod
    def _delete_dispatchers(dbname):
        with sql_db.db_connect(dbname).cursor() as cr:
            api.Environment(cr, SUPERUSER_ID, {})["queue.job"].search(
                [("identity_key", "=", DISPATCH_IDENTITY_KEY)]
            ).unlink()
