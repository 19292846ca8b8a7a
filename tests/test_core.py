"""The plain-Python core, without the ORM."""

import random
from datetime import date, datetime, timezone

from cryptography.fernet import Fernet

from odoo.tests.common import BaseCase

from ..core import circuit, ratelimit
from ..core.backoff import full_jitter, parse_retry_after, retry_delay
from ..core.crypto import EncryptionKeyError, SecretBox, SecretDecryptionError, parse_keys
from ..core.exceptions import IntegrationConnectionError, IntegrationHTTPError, describe_transport_error
from ..core.jsonpath import field_value, json_path_get
from ..core.redact import MASK, redact_headers, redact_text, redact_url
from ..core.urlsafety import UnsafeURLError, address_problem, check_url, resolve


class TestCrypto(BaseCase):
    def setUp(self):
        super().setUp()
        self.key_a = Fernet.generate_key().decode()
        self.key_b = Fernet.generate_key().decode()

    def test_roundtrip_is_ciphertext(self):
        box = SecretBox([self.key_a])
        token = box.encrypt("s3cr3t-value")
        self.assertNotIn("s3cr3t-value", token)
        self.assertEqual(box.decrypt(token), "s3cr3t-value")
        self.assertEqual(Fernet(self.key_a).decrypt(token.encode()).decode(), "s3cr3t-value")

    def test_rotation(self):
        old_token = SecretBox([self.key_a]).encrypt("value")
        rotated_box = SecretBox([self.key_b, self.key_a])
        self.assertEqual(rotated_box.decrypt(old_token), "value")
        new_token = rotated_box.rotate(old_token)
        self.assertEqual(SecretBox([self.key_b]).decrypt(new_token), "value")
        with self.assertRaises(SecretDecryptionError):
            SecretBox([self.key_a]).decrypt(new_token)

    def test_new_secrets_use_first_key(self):
        token = SecretBox([self.key_b, self.key_a]).encrypt("value")
        self.assertEqual(SecretBox([self.key_b]).decrypt(token), "value")
        with self.assertRaises(SecretDecryptionError):
            SecretBox([self.key_a]).decrypt(token)

    def test_bad_keys(self):
        with self.assertRaises(EncryptionKeyError):
            SecretBox([])
        with self.assertRaises(EncryptionKeyError) as caught:
            SecretBox([self.key_a, "not-a-fernet-key-but-secret"])
        self.assertIn("#2", str(caught.exception))
        self.assertNotIn("not-a-fernet-key-but-secret", str(caught.exception))

    def test_parse_keys(self):
        self.assertEqual(parse_keys(f" {self.key_a},\n {self.key_b} "), [self.key_a, self.key_b])
        self.assertEqual(parse_keys(""), [])
        self.assertEqual(parse_keys(None), [])


class TestRedaction(BaseCase):
    def test_headers(self):
        headers = {
            "Authorization": "Bearer abc",
            "X-API-Key": "k",
            "X-Shopify-Hmac-SHA256": "sig",
            "Cookie": "a=b",
            "Accept": "application/json",
            "X-Custom": "c",
        }
        redacted = redact_headers(headers, extra_names=["X-Custom"])
        self.assertEqual(redacted["Accept"], "application/json")
        for name in ("Authorization", "X-API-Key", "X-Shopify-Hmac-SHA256", "Cookie", "X-Custom"):
            self.assertEqual(redacted[name], MASK, name)

    def test_url(self):
        url = "https://user:pw@api.example.com/v1/orders?api_key=K1&page=2&access_token=T&apikey2=z"
        redacted = redact_url(url, extra_names=["apikey2"])
        self.assertEqual(
            redacted,
            f"https://{MASK}@api.example.com/v1/orders?api_key={MASK}&page=2&access_token={MASK}&apikey2={MASK}",
        )

    def test_text(self):
        text = "token=abcd1234\r\nInjected: header and abcd1234 again"
        self.assertEqual(redact_text(text, ["abcd1234"]), f"token={MASK} Injected: header and {MASK} again")
        self.assertTrue(redact_text("x" * 50, limit=10).startswith("x" * 10 + "..."))


class TestClassification(BaseCase):
    def test_http_statuses(self):
        for status in (408, 425, 429, 500, 502, 503, 504):
            self.assertTrue(IntegrationHTTPError("m", status).retryable, status)
        for status in (400, 401, 403, 404, 409, 422, 501):
            self.assertFalse(IntegrationHTTPError("m", status).retryable, status)
        self.assertTrue(IntegrationConnectionError("down").retryable)

    def test_transport_error_description(self):
        refused = (
            "HTTPConnectionPool(host='127.0.0.1', port=8099): Max retries exceeded with url: /oauth/token "
            "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: "
            "Failed to establish a new connection: [Errno 111] Connection refused'))"
        )
        self.assertEqual(describe_transport_error(Exception(refused)), "[Errno 111] Connection refused")
        tls = (
            "HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: / (Caused by "
            "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "self-signed certificate (_ssl.c:1006)')))"
        )
        self.assertEqual(describe_transport_error(Exception(tls)), "certificate verify failed: self-signed certificate")
        self.assertEqual(describe_transport_error(ValueError("odd")), "ValueError: odd")


class TestBackoff(BaseCase):
    def test_retry_after_both_forms(self):
        now = datetime(2026, 11, 22, 7, 0, 0, tzinfo=timezone.utc)
        self.assertEqual(parse_retry_after("120"), 120.0)
        self.assertEqual(parse_retry_after(" 0 "), 0.0)
        self.assertEqual(parse_retry_after("Sun, 22 Nov 2026 07:00:30 GMT", now=now), 30.0)
        self.assertEqual(parse_retry_after("Sun, 22 Nov 2026 06:59:00 GMT", now=now), 0.0, "a past date: now")
        for bad in (None, "", "soon", "-5", "1.5"):
            self.assertIsNone(parse_retry_after(bad), bad)

    def test_full_jitter_bounds_with_seeded_random(self):
        rng = random.Random(1234)
        for attempt in range(12):
            ceiling = min(300.0, 2.0 * 2**attempt)
            values = [full_jitter(attempt, 2.0, 300.0, rng=rng) for _i in range(200)]
            self.assertTrue(all(0.0 <= v <= ceiling for v in values), attempt)
            self.assertGreater(max(values), ceiling * 0.8, "the whole range is used")
        first = [full_jitter(3, 1.0, 60.0, rng=random.Random(7)) for _i in range(5)]
        again = [full_jitter(3, 1.0, 60.0, rng=random.Random(7)) for _i in range(5)]
        self.assertEqual(first, again, "reproducible with the same seed")

    def test_retry_delay_prefers_retry_after(self):
        self.assertEqual(retry_delay(5, 2.0, 300.0, retry_after=7.0), 7.0)
        self.assertLessEqual(retry_delay(0, 2.0, 300.0, rng=random.Random(1)), 2.0)


class TestRateLimitArithmetic(BaseCase):
    def test_rate_and_burst(self):
        tat, now, granted = None, 100.0, []
        for _i in range(5):  # 5 calls at the same instant, rate 10/s, burst 3
            decision = ratelimit.reserve(now, tat, 10.0, 3, max_wait=0.0)
            granted.append(decision.granted)
            if decision.granted:
                tat = decision.tat
        self.assertEqual(granted, [True, True, True, False, False])
        decision = ratelimit.reserve(now, tat, 10.0, 3, max_wait=1.0)
        self.assertTrue(decision.granted)
        self.assertAlmostEqual(decision.wait, 0.1)

    def test_sustained_rate_is_exact(self):
        tat, now, starts = None, 0.0, []
        for _i in range(100):
            decision = ratelimit.reserve(now, tat, 20.0, 1, max_wait=10.0)
            tat = decision.tat
            starts.append(now + decision.wait)
        self.assertAlmostEqual(starts[-1] - starts[0], 99 / 20.0)

    def test_block_and_drain(self):
        tat = ratelimit.drain(50.0, None, 2.0, 4, retry_after=10.0)
        decision = ratelimit.reserve(50.0, tat, 2.0, 4, max_wait=0.0, blocked_until=60.0)
        self.assertFalse(decision.granted)
        self.assertAlmostEqual(decision.wait, 10.0)
        decision = ratelimit.reserve(60.0, tat, 2.0, 4, max_wait=0.0, blocked_until=60.0)
        self.assertTrue(decision.granted, "one call at the end of the block...")
        self.assertFalse(ratelimit.reserve(60.0, decision.tat, 2.0, 4, 0.0, 60.0).granted, "...not a burst")
        self.assertTrue(ratelimit.reserve(5.0, None, 0, 1, 0.0).granted, "no limit configured")


class TestCircuitMachine(BaseCase):
    def test_cycle(self):
        state = circuit.CircuitState()
        for _i in range(2):
            state = circuit.record(state, 10.0, success=False, threshold=3)
        self.assertEqual(state.state, circuit.CLOSED)
        state = circuit.record(state, 11.0, success=False, threshold=3)
        self.assertEqual((state.state, state.opened_at), (circuit.OPEN, 11.0))
        refused = circuit.admit(state, 20.0, reset_timeout=30.0)
        self.assertFalse(refused.allowed)
        self.assertAlmostEqual(refused.retry_in, 21.0)
        probe = circuit.admit(state, 41.0, reset_timeout=30.0)
        self.assertTrue(probe.allowed and probe.is_probe)
        self.assertEqual(probe.state.state, circuit.HALF_OPEN)
        self.assertFalse(circuit.admit(probe.state, 42.0, 30.0).allowed, "one probe at a time")
        reopened = circuit.record(probe.state, 43.0, success=False, threshold=3, is_probe=True)
        self.assertEqual((reopened.state, reopened.opened_at), (circuit.OPEN, 43.0))
        closed = circuit.record(probe.state, 43.0, success=True, threshold=3, is_probe=True)
        self.assertEqual(closed, circuit.CircuitState())

    def test_late_outcomes_do_not_decide(self):
        opened = circuit.CircuitState(circuit.OPEN, 3, opened_at=10.0)
        late_failure = circuit.record(opened, 25.0, success=False, threshold=3)
        self.assertEqual((late_failure.state, late_failure.opened_at, late_failure.failures), (circuit.OPEN, 10.0, 4))
        self.assertEqual(circuit.record(opened, 25.0, success=True, threshold=3).state, circuit.OPEN)
        half_open = circuit.CircuitState(circuit.HALF_OPEN, 3, opened_at=10.0, probe_at=40.0)
        self.assertEqual(circuit.record(half_open, 41.0, success=True, threshold=3).state, circuit.HALF_OPEN)

    def test_stale_probe_replaced(self):
        half_open = circuit.CircuitState(circuit.HALF_OPEN, 3, opened_at=0.0, probe_at=100.0)
        self.assertTrue(circuit.admit(half_open, 131.0, reset_timeout=30.0).is_probe)


class TestUrlSafety(BaseCase):
    def test_schemes(self):
        with self.assertRaisesRegex(UnsafeURLError, "only http and https"):
            check_url("ftp://example.com/")
        with self.assertRaisesRegex(UnsafeURLError, "plain http is not allowed"):
            check_url("http://example.com/")
        self.assertEqual(check_url("http://example.com/", allow_http=True), ("http", "example.com", 80))
        self.assertEqual(check_url("https://example.com:8443/x"), ("https", "example.com", 8443))

    def test_addresses(self):
        refused = {
            "127.0.0.1": "loopback",
            "10.1.2.3": "private",
            "172.16.0.1": "private",
            "192.168.1.1": "private",
            "169.254.169.254": "link-local (cloud metadata)",
            "100.64.0.1": "carrier-grade NAT",
            "::1": "loopback",
            "fd00::1": "unique-local",
            "fe80::1": "link-local (cloud metadata)",
            "::ffff:127.0.0.1": "loopback",
            "::ffff:10.0.0.1": "private",
            "0.0.0.0": "unspecified",
            "224.0.0.1": "multicast",
            "fec0::1": "site-local",
        }
        for address, problem in refused.items():
            self.assertEqual(address_problem(address), problem, address)
        for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"):
            self.assertIsNone(address_problem(address), address)

    def test_encoded_loopback_resolves_and_is_refused(self):
        for host in ("2130706433", "0x7f000001", "127.1", "0177.0.0.1", "localhost"):
            with self.subTest(host=host), self.assertRaisesRegex(UnsafeURLError, "loopback"):
                resolve(host, 80)
            self.assertTrue(resolve(host, 80, allow_private=True))

    def test_private_allowed_with_flag_without_connecting(self):
        for host in ("10.0.0.8", "169.254.169.254", "fd12::8"):
            with self.assertRaises(UnsafeURLError):
                resolve(host, 443)
            self.assertTrue(resolve(host, 443, allow_private=True))


class TestJsonValues(BaseCase):
    def test_paths_reach_objects_and_array_items(self):
        document = {"data": {"items": [{"sku": "A-1"}, {"sku": "B-2"}]}, "id": 0}
        self.assertEqual(json_path_get(document, "data.items.1.sku"), "B-2")
        self.assertEqual(json_path_get(document, "id"), 0)
        self.assertIsNone(json_path_get(document, "data.items.7.sku"), "past the end")
        self.assertIsNone(json_path_get(document, "data.missing.sku"))
        self.assertIsNone(json_path_get(None, "id"), "a body that was not JSON")

    def test_values_converted_per_field_type(self):
        self.assertEqual(field_value("42", "integer"), 42)
        self.assertEqual(field_value(2.5, "monetary"), 2.5)
        self.assertIs(field_value("yes", "boolean"), True)
        self.assertIs(field_value("no", "boolean"), False)
        self.assertEqual(field_value({"a": 1}, "text"), '{"a": 1}')
        self.assertEqual(field_value("2026-12-02T10:00:00+01:00", "datetime"), datetime(2026, 12, 2, 9, 0))
        self.assertEqual(field_value("2026-12-02T23:59:00Z", "date"), date(2026, 12, 2))
        self.assertIs(field_value(None, "char"), False)
        self.assertEqual(field_value(7, "char"), "7")
        with self.assertRaises(ValueError):
            field_value("forty-two", "integer")
        with self.assertRaisesRegex(ValueError, "not a finite number"):
            field_value(10**400, "float")  # past what a float holds: said, not an OverflowError
