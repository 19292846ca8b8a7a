"""The webhook route, over real HTTP: verify, store once, queue, answer."""

import hashlib
import io
import json
import os
import threading
import time
import uuid
from datetime import timedelta
from unittest.mock import patch
from urllib.parse import urlencode

import requests

from odoo import SUPERUSER_ID, api, fields, http, sql_db
from odoo.tests import HttpCase, tagged
from odoo.tools import mute_logger

from ..const import CHANNEL_WEBHOOK, DATABASE_DOWN_RETRY_AFTER, DISPATCH_IDENTITY_KEY
from ..models.webhook_event.inbox import _INGEST_EXECUTE, _inbox_pool, _unprepared_sessions
from ..sandbox import demo
from ..sandbox import webhook_senders as senders
from ..sandbox.sender import Sender
from .common import ROUTE_LOGGER, CommittedConnector, IntegrationHubMixin, odoo_server, run_job

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_SECRET_NEW = "whsec_" + "bmV3LXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHMh"
PLAIN_SECRET = "plain-secret-for-tests"
PLAIN_SECRET_NEW = "rotated-plain-secret"


def _body(event_id="evt_1", event_type="order.created", **extra):
    return json.dumps({"id": event_id, "type": event_type, "data": {"order": 42, **extra}}).encode()


# Per profile: connector settings, and a function (secret, body, event id, timestamp) -> headers,
# made by the sender-side code of sandbox/webhook_senders.py.
PROFILES = {
    "standard_webhooks": (
        {},
        (STANDARD_SECRET, STANDARD_SECRET_NEW),
        lambda secret, body, eid, ts: senders.standard_webhooks_headers(secret, body, eid, ts),
    ),
    "stripe": (
        {},
        (PLAIN_SECRET, PLAIN_SECRET_NEW),
        lambda secret, body, eid, ts: senders.stripe_headers(secret, body, ts),
    ),
    "github": (
        {},
        (PLAIN_SECRET, PLAIN_SECRET_NEW),
        lambda secret, body, eid, ts: senders.github_headers(secret, body, eid, "push"),
    ),
    "shopify": (
        {},
        (PLAIN_SECRET, PLAIN_SECRET_NEW),
        lambda secret, body, eid, ts: senders.shopify_headers(secret, body, eid, "orders/create"),
    ),
    "hmac_sha256": (
        {
            "webhook_hmac_header": "X-Partner-Signature",
            "webhook_hmac_encoding": "base64",
            "webhook_hmac_prefix": "sha256=",
            "webhook_hmac_timestamp_header": "X-Partner-Timestamp",
            "webhook_id_header": "X-Partner-Delivery",
        },
        (PLAIN_SECRET, PLAIN_SECRET_NEW),
        lambda secret, body, eid, ts: {
            **senders.generic_hmac_headers(
                secret,
                body,
                header="X-Partner-Signature",
                encoding="base64",
                prefix="sha256=",
                timestamp_header="X-Partner-Timestamp",
                timestamp=ts,
            ),
            "X-Partner-Delivery": eid,
        },
    ),
}
TIMESTAMPED = ("standard_webhooks", "stripe", "hmac_sha256")
SIGNATURE_HEADER = {
    "standard_webhooks": "webhook-signature",
    "stripe": "Stripe-Signature",
    "github": "X-Hub-Signature-256",
    "shopify": "X-Shopify-Hmac-SHA256",
    "hmac_sha256": "X-Partner-Signature",
}


class WebhookRouteCase(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        cls.Event = cls.env["integration.webhook.event"]

    def _receiver(self, profile="standard_webhooks", secret=None, **values):
        settings, secrets, _sign = PROFILES.get(profile, ({}, (PLAIN_SECRET,), None))
        connector = self._create_connector(webhook_signature=profile, **{**settings, **values})
        if secret is None:
            secret = secrets[0]
        if secret:
            connector.webhook_secret = secret
        return connector

    def _post(self, code, body, headers=None, content_type="application/json"):
        headers = {"Content-Type": content_type, **(headers or {})}
        return self.url_open(f"/integration/webhook/{code}", data=body, headers=headers, timeout=30)

    def _events(self, connector):
        return self.Event.search([("connector_id", "=", connector.id)])

    def _dispatch(self):
        """Run the dispatcher the request queued: it gives each received event its job."""
        dispatchers = self.env["queue.job"].search([("identity_key", "=", DISPATCH_IDENTITY_KEY)])
        self.assertEqual(dispatchers.mapped("state"), ["pending"], "one dispatcher waits to run")
        self.Event._job_dispatch_received()
        dispatchers.unlink()
        self.Event.invalidate_model()


@tagged("post_install", "-at_install")
class TestWebhookSignatures(WebhookRouteCase):
    def _deliver(self, profile, connector, secret, body, event_id, timestamp=None, mutate=None):
        headers = PROFILES[profile][2](secret, body, event_id, int(time.time()) if timestamp is None else timestamp)
        if mutate:
            headers = mutate(headers)
        return self._post(connector.code, body, headers)

    def test_valid_delivery_is_stored_and_queued(self):
        for profile in PROFILES:
            with self.subTest(profile=profile):
                connector = self._receiver(profile)
                body = _body(f"evt-{profile}")
                response = self._deliver(profile, connector, PROFILES[profile][1][0], body, f"delivery-{profile}")
                self.assertEqual(response.status_code, 202, response.text)
                answer = response.json()
                self.assertEqual(answer["status"], "accepted")
                event = self._events(connector)
                self.assertEqual(len(event), 1)
                self.assertEqual(answer["reference"], event.id)
                self.assertEqual(event.state, "received")
                self._dispatch()
                self.assertEqual(event.state, "queued")
                self.assertEqual(event.payload, body.decode(), "the raw body is stored as received")
                self.assertEqual(event.payload_size, len(body))
                self.assertTrue(event.job_id, "a processing job was created")
                self.assertEqual(event.job_id.channel, CHANNEL_WEBHOOK)
                self.assertEqual(event.job_id.identity_key, f"integration.webhook.event:{event.id}")
                expected_id = f"evt-{profile}" if profile == "stripe" else f"delivery-{profile}"
                self.assertEqual(event.event_id, expected_id)
                self.assertEqual(answer["event_id"], expected_id)
                expected_type = {"github": "push", "shopify": "orders/create"}.get(profile, "order.created")
                if profile == "hmac_sha256":
                    expected_type = ""  # no type header or path configured on this connector
                self.assertEqual(event.event_type or "", expected_type)
                stored_headers = json.loads(event.headers)
                signature_header = next(k for k in stored_headers if k.lower() == SIGNATURE_HEADER[profile].lower())
                self.assertEqual(stored_headers[signature_header], "***", "signatures are masked in storage")

    @mute_logger(ROUTE_LOGGER)
    def test_forged_deliveries_get_401_and_nothing_is_stored(self):
        for profile, (_settings, secrets, sign) in PROFILES.items():
            connector = self._receiver(profile)
            body = _body()
            now = int(time.time())
            signed = sign(secrets[0], body, "d1", now)
            unsigned = {k: v for k, v in signed.items() if k.lower() != SIGNATURE_HEADER[profile].lower()}
            cases = {
                "tampered body": (body.replace(b"42", b"43"), signed),
                "wrong secret": (body, sign(secrets[1], body, "d2", now)),
                "missing signature header": (body, unsigned),
            }
            if profile in TIMESTAMPED:
                cases["expired timestamp"] = (body, sign(secrets[0], body, "d4", now - 301 - 5))
                cases["future timestamp"] = (body, sign(secrets[0], body, "d5", now + 301 + 5))
            for label, (sent_body, headers) in cases.items():
                with self.subTest(profile=profile, case=label):
                    response = self._post(connector.code, sent_body, headers)
                    self.assertEqual(response.status_code, 401, response.text)
                    self.assertEqual(response.json()["error"], "invalid_signature")
                    self.assertNotIn(secrets[0], response.text)
            self.assertFalse(self._events(connector), f"{profile}: nothing stored")

    @mute_logger(ROUTE_LOGGER)
    def test_no_secret_refuses_every_profile(self):
        for profile, (_settings, secrets, _sign) in PROFILES.items():
            with self.subTest(profile=profile):
                connector = self._receiver(profile, secret=False)
                response = self._deliver(profile, connector, secrets[0], _body(), "d1")
                self.assertEqual(response.status_code, 401)
                self.assertIn("no signing secret", response.json()["message"])
                self.assertFalse(self._events(connector))

    def test_previous_secret_accepted_during_rotation(self):
        for profile, (_settings, secrets, _sign) in PROFILES.items():
            with self.subTest(profile=profile):
                connector = self._receiver(profile, secret=secrets[1])
                connector.webhook_secret_previous = secrets[0]
                old = self._deliver(profile, connector, secrets[0], _body("evt-old"), "old")
                new = self._deliver(profile, connector, secrets[1], _body("evt-new"), "new")
                self.assertEqual((old.status_code, new.status_code), (202, 202))
                connector.with_context(secret_field="webhook_secret_previous").action_clear_secret()
                with mute_logger(ROUTE_LOGGER):
                    retired = self._deliver(profile, connector, secrets[0], _body("evt-late"), "late")
                self.assertEqual(retired.status_code, 401, "the retired secret no longer works")
                self.assertEqual(len(self._events(connector)), 2)

    def test_a_secret_revoked_by_writing_false_is_refused_at_once(self):
        # A provisioning script revokes a leaked signing secret over RPC: the route's cached
        # receiver must not keep accepting it.
        connector = self._receiver("standard_webhooks", secret=STANDARD_SECRET)
        self.assertEqual(
            self._deliver("standard_webhooks", connector, STANDARD_SECRET, _body("e-1"), "1").status_code, 202
        )
        connector.write({"webhook_secret": False})
        with mute_logger(ROUTE_LOGGER):
            refused = self._deliver("standard_webhooks", connector, STANDARD_SECRET, _body("e-2"), "2")
        self.assertEqual(refused.status_code, 401)
        self.assertEqual(len(self._events(connector)), 1)

    def test_unsigned_profile_must_be_chosen(self):
        connector = self._receiver("none", secret=False)
        response = self._post(connector.code, _body("evt-open"))
        self.assertEqual(response.status_code, 202)
        digest = hashlib.sha256(_body("evt-open")).hexdigest()
        self.assertEqual(self._events(connector).event_id, f"sha256:{digest}", "no id header: the body identifies")
        default = self.env["integration.connector"].new({})
        self.assertEqual(default.webhook_signature, "standard_webhooks", "a new connector verifies by default")


@tagged("post_install", "-at_install")
class TestWebhookRoute(WebhookRouteCase):
    def _signed(self, connector, body, event_id="d1"):
        return senders.standard_webhooks_headers(STANDARD_SECRET, body, event_id, int(time.time()))

    def test_duplicate_delivery_is_200_and_counted(self):
        connector = self._receiver()
        body = _body()
        # One read/write transaction each: no read-only attempt failing first (Odoo's
        # default for auth="none" routes, where a read replica would refuse the insert).
        with self.assertNoLogs("odoo.http", "WARNING"):
            first = self._post(connector.code, body, self._signed(connector, body, "msg_1"))
            second = self._post(connector.code, body, self._signed(connector, body, "msg_1"))
        self.assertEqual(first.status_code, 202)
        self.assertEqual(second.status_code, 200)
        self.assertEqual(second.json()["status"], "duplicate")
        self.assertEqual(second.json()["reference"], first.json()["reference"])
        event = self._events(connector)
        self.assertEqual(len(event), 1)
        event.invalidate_recordset()
        self.assertEqual(event.duplicate_count, 1)
        self._dispatch()
        jobs = self.env["queue.job"].search([("identity_key", "=", f"integration.webhook.event:{event.id}")])
        self.assertEqual(len(jobs), 1, "a duplicate queues nothing")

    def test_delivery_while_the_database_is_unreachable_is_503_not_404(self):
        connector = self._receiver()
        body = _body()

        def unreachable(_request):
            raise http.RegistryError("Cannot get registry (PostgreSQL restarting)")

        # What Odoo meets while PostgreSQL restarts: the registry cannot be opened. Without
        # the addon, it serves the request without a database, where no webhook route exists.
        with patch.object(http.Request, "_open_registry", unreachable), mute_logger(ROUTE_LOGGER, "odoo.http"):
            refused = self._post(connector.code, body, self._signed(connector, body, "msg_db_down"))
            other = self.url_open("/integration/metrics", timeout=30)
        self.assertEqual(refused.status_code, 503, "a sender retries a 503; a 404 would end its deliveries")
        self.assertEqual(refused.headers["Retry-After"], str(DATABASE_DOWN_RETRY_AFTER))
        self.assertEqual(refused.json()["error"], "unavailable")
        self.assertEqual(other.status_code, 404, "other routes keep Odoo's database-less fallback")
        self.assertFalse(self._events(connector))
        accepted = self._post(connector.code, body, self._signed(connector, body, "msg_db_down"))
        self.assertEqual(accepted.status_code, 202, "the retry, once the database is back, is stored")
        self.assertEqual(len(self._events(connector)), 1)

    def test_concurrent_deliveries_of_one_event(self):
        connector = self._receiver()
        body = _body()
        headers = self._signed(connector, body, "msg_concurrent")
        code = connector.code
        statuses = []
        barrier = threading.Barrier(20, timeout=30)

        def deliver():
            barrier.wait()
            statuses.append(self._post(code, body, headers).status_code)

        threads = [threading.Thread(target=deliver) for _i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(sorted(statuses), [200] * 19 + [202])
        event = self._events(connector)
        self.assertEqual(len(event), 1)
        event.invalidate_recordset()
        self.assertEqual(event.duplicate_count, 19)
        self._dispatch()
        jobs = self.env["queue.job"].search([("identity_key", "=", f"integration.webhook.event:{event.id}")])
        self.assertEqual(len(jobs), 1)

    @mute_logger(ROUTE_LOGGER)
    def test_oversized_body_413_before_anything(self):
        connector = self._receiver(webhook_max_body_kib=1)
        body = json.dumps({"id": "big", "blob": "x" * 2000}).encode()
        response = self._post(connector.code, body, self._signed(connector, body))
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.json()["error"], "too_large")
        # Unsigned too: the size is checked before the signature.
        response = self._post(connector.code, body, {})
        self.assertEqual(response.status_code, 413)
        # A form body is refused before Odoo parses it, with the same JSON answer.
        form = urlencode({"payload": "x" * 2000}).encode()
        response = self._post(connector.code, form, {}, content_type="application/x-www-form-urlencoded")
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.headers["Content-Type"], "application/json")
        self.assertEqual(response.json(), {"error": "too_large", "message": "The body exceeds 1024 bytes."})
        self.assertFalse(self._events(connector))

    def test_unknown_and_archived_connectors_404(self):
        response = self._post("no-such-connector", b"{}", {})
        self.assertEqual(response.status_code, 404)
        connector = self._receiver()
        connector.active = False
        body = _body()
        response = self._post(connector.code, body, self._signed(connector, body))
        self.assertEqual(response.status_code, 404)
        self.assertFalse(self.Event.with_context(active_test=False).search([("connector_id", "=", connector.id)]))

    def test_paused_connector_503_with_retry_after(self):
        connector = self._receiver()
        connector.action_webhook_pause()
        body = _body()
        response = self._post(connector.code, body, self._signed(connector, body))
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.headers["Retry-After"], "120")
        self.assertFalse(self._events(connector))
        connector.action_webhook_resume()
        self.assertEqual(self._post(connector.code, body, self._signed(connector, body)).status_code, 202)

    def test_github_form_delivery_verified_on_raw_bytes(self):
        # GitHub can deliver as application/x-www-form-urlencoded (payload=<json>); the
        # signature covers the encoded body, which Odoo would otherwise parse away.
        connector = self._receiver("github")
        body = urlencode({"payload": json.dumps({"action": "opened", "number": 7})}).encode()
        headers = senders.github_headers(PLAIN_SECRET, body, "gh-delivery-1", "pull_request")
        response = self._post(connector.code, body, headers, content_type="application/x-www-form-urlencoded")
        self.assertEqual(response.status_code, 202, response.text)
        event = self._events(connector)
        self.assertEqual(event.payload, body.decode())
        self.assertEqual((event.event_id, event.event_type), ("gh-delivery-1", "pull_request"))

    def test_signed_body_replayed_under_a_new_id_is_a_duplicate(self):
        # GitHub's and Shopify's signatures cover the body, not the delivery id header: a body
        # captured once must not be processed again by changing the id.
        for profile, sign in (
            ("github", lambda body, eid: senders.github_headers(PLAIN_SECRET, body, eid, "push")),
            ("shopify", lambda body, eid: senders.shopify_headers(PLAIN_SECRET, body, eid, "orders/create")),
        ):
            with self.subTest(profile=profile):
                connector = self._receiver(profile)
                body = _body("evt-replayed")
                first = self._post(connector.code, body, sign(body, "delivery-1"))
                replay = self._post(connector.code, body, sign(body, "delivery-2"))
                self.assertEqual((first.status_code, replay.status_code), (202, 200))
                self.assertEqual(replay.json()["reference"], first.json()["reference"])
                event = self._events(connector)
                self.assertEqual(len(event), 1)
                event.invalidate_recordset()
                self.assertEqual(event.duplicate_count, 1)

    def test_body_without_content_length_411(self):
        connector = self._receiver()
        body = _body()
        response = self._post(connector.code, iter([body]), self._signed(connector, body))
        self.assertEqual(response.status_code, 411)
        self.assertFalse(self._events(connector))

    def test_event_id_and_type_from_json_paths(self):
        connector = self._receiver(
            "hmac_sha256",
            webhook_id_path="meta.delivery",
            webhook_type_path="meta.topic",
            webhook_hmac_header="X-Sig",
            webhook_hmac_encoding="hex",
            webhook_hmac_prefix=False,
            webhook_hmac_timestamp_header=False,
            webhook_id_header=False,
        )
        body = json.dumps({"meta": {"delivery": "abc-123", "topic": "stock.changed"}}).encode()
        response = self._post(connector.code, body, senders.generic_hmac_headers(PLAIN_SECRET, body, header="X-Sig"))
        self.assertEqual(response.status_code, 202, response.text)
        event = self._events(connector)
        self.assertEqual((event.event_id, event.event_type), ("abc-123", "stock.changed"))

    def test_demo_shop_receives_and_its_rule_creates_contacts(self):
        # The demo connector of scripts/run, as its notes tell a newcomer to try it.
        demo = self.env.ref("integration_hub.integration_connector_demo_shop_webhooks")
        admin = self.env.ref("base.user_admin")
        customer = {"id": "C-3", "name": "Ada", "email": "ada@example.com"}
        body = json.dumps({"id": "evt_3", "type": "customer.created", "data": customer}).encode()
        response = self._post("demo-shop", body)
        self.assertEqual(response.status_code, 202, response.text)
        self._dispatch()
        event = self._events(demo).filtered(lambda e: e.event_id == "evt_3")
        self.assertEqual((event.event_type, event.state), ("customer.created", "queued"))
        self.assertIsNone(run_job(self.env, event.job_id.uuid))
        event.invalidate_recordset()
        partner = self.env["res.partner"].search([("ref", "=", "C-3")])
        self.assertEqual((partner.name, partner.email, partner.create_uid), ("Ada", "ada@example.com", admin))
        self.assertEqual((event.state, event.res_id), ("done", partner.id))
        # The demo's failed event: Retry, and its contact is created.
        failed = self.env.ref("integration_hub.integration_webhook_event_demo_failed")
        self.assertEqual(failed.state, "failed")
        failed.action_retry()
        self.assertIsNone(run_job(self.env, failed.job_id.uuid))
        failed.invalidate_recordset()
        self.assertEqual(failed.state, "done")
        self.assertEqual(self.env["res.partner"].search([("ref", "=", "C-2")]).name, "Demo Customer Two")

    def test_the_demo_senders_deliveries_are_accepted_and_a_payment_customer_becomes_a_company(self):
        # What scripts/run's sender posts, signed with sandbox/demo.py's secrets (Standard
        # Webhooks and Stripe), against what the demo data set on the two connectors (set again
        # here, with the tests' encryption key).
        with patch.dict(os.environ, {demo.LIVE_VARIABLE: "1"}):
            self.env["integration.connector"]._demo_setup()
        sender = Sender("http://127.0.0.1:9", "http://127.0.0.1:9", 1.0, out=io.StringIO())
        order = sender.order_event("pedido.indexado", 5)
        response = self._post(order.connector, order.body, order.headers())
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(self._post(order.connector, order.body, order.headers()).status_code, 200, "a duplicate")
        payment = sender.payment_event()
        while payment.event_type != "customer.created":
            payment = sender.payment_event()
        response = self._post(payment.connector, payment.body, payment.headers())
        self.assertEqual(response.status_code, 202, response.text)
        self._dispatch()
        connector = self.env.ref("integration_hub.integration_connector_demo_payments")
        event = self._events(connector)
        self.assertEqual(event.event_type, "customer.created")
        self.assertIsNone(run_job(self.env, event.job_id.uuid))
        event.invalidate_recordset()
        customer = json.loads(payment.body)["data"]["object"]
        partner = self.env["res.partner"].search([("ref", "=", customer["id"])])
        self.assertEqual((event.state, partner.name, partner.is_company), ("done", customer["name"], True))

    def test_get_is_not_a_delivery(self):
        connector = self._receiver()
        response = self.url_open(f"/integration/webhook/{connector.code}", timeout=30)
        self.assertEqual(response.status_code, 405)


@tagged("post_install", "-at_install")
class TestConcurrentIngest(IntegrationHubMixin, HttpCase):
    """Twenty transactions of their own storing one event at once, on committed data.

    The route tests share one test transaction; here each delivery has its own
    connection, as with several Odoo workers.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def _unsigned_connector(self, name, **values):
        """An unsigned connector committed for real (deleted after the test), and its code."""
        code = f"{name.lower()}-{uuid.uuid4().hex[:8]}"
        values = {"name": name, "code": code, "base_url": "http://127.0.0.1:9/", "webhook_signature": "none", **values}
        committed = CommittedConnector(self.env.cr.dbname, values)
        self.addCleanup(committed.delete)
        return committed, code

    def test_twenty_transactions_one_row_one_job(self):
        dbname = self.env.cr.dbname
        committed, code = self._unsigned_connector("Concurrent")
        body = b'{"id": "evt_race", "type": "order.created"}'
        results, errors = [], []
        barrier = threading.Barrier(20, timeout=30)

        def ingest(commit):
            # Half as the route calls it (committed at once on an inbox connection), half in
            # the caller's transaction (a savepoint in a snapshot taken before the race).
            try:
                with sql_db.db_connect(dbname).cursor() as cr:
                    env = api.Environment(cr, SUPERUSER_ID, {})
                    connector = env["integration.connector"].browse(committed.id)
                    receiver = connector._webhook_receiver(connector.code)
                    cr.execute("SELECT 1")  # the transaction's snapshot starts before the race
                    barrier.wait()
                    results.append(
                        env["integration.webhook.event"]._ingest(receiver, body, {}, "evt_race", "x", commit=commit)
                    )
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(exc))

        threads = [threading.Thread(target=ingest, args=(i % 2 == 0,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(created for _id, created in results), [False] * 19 + [True])
        with sql_db.db_connect(dbname).cursor() as cr:
            cr.execute(
                """SELECT e.id, d.count FROM integration_webhook_event e
                     LEFT JOIN integration_webhook_duplicate d ON d.event_id = e.id
                    WHERE e.connector_id = %s""",
                [committed.id],
            )
            rows = cr.fetchall()
            self.assertEqual(len(rows), 1)
            self.assertEqual(rows[0][1], 19)
            keys = (DISPATCH_IDENTITY_KEY, f"integration.webhook.event:{rows[0][0]}")
            cr.execute("SELECT identity_key, count(*) FROM queue_job WHERE identity_key IN %s GROUP BY 1", [keys])
            self.assertEqual(dict(cr.fetchall()), {DISPATCH_IDENTITY_KEY: 1}, "one dispatcher queued, by the first")
        try:
            with sql_db.db_connect(dbname).cursor() as cr:
                api.Environment(cr, SUPERUSER_ID, {})["integration.webhook.event"]._job_dispatch_received()
            with sql_db.db_connect(dbname).cursor() as cr:
                cr.execute("SELECT identity_key, count(*) FROM queue_job WHERE identity_key IN %s GROUP BY 1", [keys])
                self.assertEqual(dict(cr.fetchall()), {DISPATCH_IDENTITY_KEY: 1, keys[1]: 1}, "one event job")
                cr.execute("SELECT state FROM integration_webhook_event WHERE connector_id = %s", [committed.id])
                self.assertEqual(cr.fetchone()[0], "queued")
        finally:
            with sql_db.db_connect(dbname).cursor() as cr:
                cr.execute("DELETE FROM queue_job WHERE identity_key IN %s", [keys])

    def test_a_repeated_delivery_never_conflicts_with_the_events_job(self):
        # The job (or dispatcher, or an operator) writes the event row; a repeated delivery
        # arriving meanwhile must neither wait for it nor make its transaction fail.
        dbname = self.env.cr.dbname
        committed, code = self._unsigned_connector("Busy")
        self.addCleanup(self._delete_dispatchers, dbname)
        body = b'{"id": "evt_busy"}'

        def deliver(commit=False):
            outcome = []

            def run():
                try:
                    with sql_db.db_connect(dbname).cursor() as cr:
                        cr.execute("SET LOCAL lock_timeout = '5s'")  # waiting on the job would fail here
                        env = api.Environment(cr, SUPERUSER_ID, {})
                        receiver = env["integration.connector"]._webhook_receiver(code)
                        Event = env["integration.webhook.event"]
                        outcome.append(Event._ingest(receiver, body, {}, "evt_busy", "x", commit=commit))
                except Exception as exc:  # noqa: BLE001 - reported below
                    outcome.append(exc)

            # In a thread of its own: a delivery that waited for the job's row lock would
            # otherwise wait here for ever (the inbox connection has no lock timeout).
            thread = threading.Thread(target=run)
            thread.start()
            thread.join(10)
            self.assertFalse(thread.is_alive(), "the delivery waited for the job")
            if isinstance(outcome[0], Exception):
                raise outcome[0]
            return outcome[0]

        event_id, created = deliver(commit=True)
        self.assertTrue(created)
        with sql_db.db_connect(dbname).cursor() as job_cr:
            # The job's snapshot is taken, then it writes the row and keeps it locked.
            job_cr.execute("SELECT state FROM integration_webhook_event WHERE id = %s", [event_id])
            self.assertEqual(job_cr.fetchone()[0], "received")
            self.assertEqual(deliver(), (event_id, False), "counted before the job writes")
            job_cr.execute("UPDATE integration_webhook_event SET state = 'queued' WHERE id = %s", [event_id])
            self.assertEqual(deliver(), (event_id, False), "counted while the job holds the row")
            self.assertEqual(deliver(commit=True), (event_id, False), "counted by the route's inbox connection")
            job_cr.execute("UPDATE integration_webhook_event SET state = 'done' WHERE id = %s", [event_id])
        with sql_db.db_connect(dbname).cursor() as cr:
            cr.execute(
                """SELECT e.state, d.count FROM integration_webhook_event e
                     JOIN integration_webhook_duplicate d ON d.event_id = e.id WHERE e.id = %s""",
                [event_id],
            )
            self.assertEqual(cr.fetchone(), ("done", 3))

    def test_a_real_server_commits_each_delivery_before_answering(self):
        # The route as deployed (no test mode): the event is committed on the inbox's own
        # connection before the 202, the dispatcher job by the request's transaction.
        dbname = self.env.cr.dbname
        committed, code = self._unsigned_connector("Served", webhook_id_header="X-Event")
        self.addCleanup(self._delete_dispatchers, dbname)
        self._delete_dispatchers(dbname)

        def stored():
            with sql_db.db_connect(dbname).cursor() as cr:
                cr.execute(
                    """SELECT e.event_id, e.state, d.count FROM integration_webhook_event e
                         LEFT JOIN integration_webhook_duplicate d ON d.event_id = e.id
                        WHERE e.connector_id = %s ORDER BY e.id""",
                    [committed.id],
                )
                events = cr.fetchall()
                cr.execute(
                    "SELECT count(*) FROM queue_job WHERE identity_key = %s AND state = 'pending'",
                    [DISPATCH_IDENTITY_KEY],
                )
                return events, cr.fetchone()[0]

        _inbox_pool.close_all()
        with odoo_server(dbname) as url:

            def post(event_id):
                body = json.dumps({"id": event_id, "type": "order.created"}).encode()
                headers = {"Content-Type": "application/json", "X-Event": event_id}
                return requests.post(f"{url}/integration/webhook/{code}", data=body, headers=headers, timeout=30)

            first = post("evt_served_1")
            self.assertEqual(first.status_code, 202, first.text)
            self.assertEqual(stored(), ([("evt_served_1", "received", None)], 1))
            with sql_db.db_connect(dbname).cursor() as cr:
                # This process's own inbox connections were closed before the server started.
                cr.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                    [dbname, "integration_hub webhook inbox"],
                )
                self.assertGreaterEqual(cr.fetchone()[0], 1, "stored through the server's inbox connection")
            again = post("evt_served_1")
            self.assertEqual((again.status_code, again.json()["status"]), (200, "duplicate"))
            self.assertEqual(again.json()["reference"], first.json()["reference"])
            self.assertEqual(stored(), ([("evt_served_1", "received", 1)], 1), "counted, nothing queued")
            # A request whose transaction failed after its event committed lost the dispatcher
            # with it: a repeated delivery queues one again, once the first request had the
            # time to commit its own (here, the event came a minute ago).
            self._delete_dispatchers(dbname)
            set_received_at = "UPDATE integration_webhook_event SET received_at = %s WHERE connector_id = %s"
            with sql_db.db_connect(dbname).cursor() as cr:
                cr.execute(set_received_at, [fields.Datetime.now(), committed.id])
            self.assertEqual(post("evt_served_1").status_code, 200)
            self.assertEqual(stored(), ([("evt_served_1", "received", 2)], 0), "too early to tell")
            with sql_db.db_connect(dbname).cursor() as cr:
                cr.execute(set_received_at, [fields.Datetime.now() - timedelta(minutes=1), committed.id])
            self.assertEqual(post("evt_served_1").status_code, 200)
            self.assertEqual(stored(), ([("evt_served_1", "received", 3)], 1))
            self.assertEqual(post("evt_served_2").status_code, 202)
            self.assertEqual(stored()[1], 1, "a waiting dispatcher serves the next event too")

    def test_inbox_session_without_its_prepared_statement_still_stores(self):
        # Behind a pooler in transaction mode (or after a DISCARD) the statement prepared
        # when the connection opened may be gone from the session that runs EXECUTE.
        dbname = self.env.cr.dbname
        committed, code = self._unsigned_connector("Unprepared")
        self.addCleanup(self._delete_dispatchers, dbname)
        with _inbox_pool.cursor(dbname) as cr:
            cr.execute("DEALLOCATE ALL")  # this idle connection is the next one lent
        with sql_db.db_connect(dbname).cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            receiver = env["integration.connector"]._webhook_receiver(code)
            record_id, created = env["integration.webhook.event"]._ingest(
                receiver, b'{"id": 1}', {}, "evt_unprepared", "x", commit=True
            )
        self.assertTrue(created)
        with sql_db.db_connect(dbname).cursor() as cr:
            cr.execute("SELECT event_id, state FROM integration_webhook_event WHERE id = %s", [record_id])
            self.assertEqual(cr.fetchone(), ("evt_unprepared", "received"))
        with _inbox_pool.cursor(dbname) as cr:
            self.assertIn(cr.connection, _unprepared_sessions, "that session runs unprepared from now on")

    def test_inbox_plan_is_index_probes_whatever_the_statistics(self):
        # The prepared statement's generic plan is kept for the session's life: it must not
        # scan the events or jobs table, even when made while they were empty.
        dbname = self.env.cr.dbname
        values = [1, 1, "evt_plan", "x", None, None, "{}", "{}", False, 2, None, DISPATCH_IDENTITY_KEY]
        with _inbox_pool.cursor(dbname) as cr:
            # A generic plan, costed as if the statistics said the tables were (nearly) empty:
            # reading a whole table then looks free.
            cr.execute("SET plan_cache_mode TO force_generic_plan")
            cr.execute("SET seq_page_cost TO 0")
            cr.execute("SET cpu_tuple_cost TO 0")
            try:
                cr.execute("EXPLAIN " + _INGEST_EXECUTE, values)  # planned, not run
                plan = "\n".join(row[0] for row in cr.fetchall())
            finally:
                cr.execute("RESET plan_cache_mode")
                cr.execute("RESET seq_page_cost")
                cr.execute("RESET cpu_tuple_cost")
        self.assertNotIn("Seq Scan", plan)
        self.assertIn("Index Cond: ((connector_id = $1) AND ((event_id)::text = ($3)::text))", plan)
        self.assertIn("Index Cond: ((connector_id = $1) AND ((payload_hash)::text = ($11)::text))", plan)
        self.assertIn("queue_job_identity_key_state_partial_index", plan)

    @staticmethod
    def _delete_dispatchers(dbname):
        with sql_db.db_connect(dbname).cursor() as cr:
            cr.execute("DELETE FROM queue_job WHERE identity_key = %s", [DISPATCH_IDENTITY_KEY])
