"""The plain-Python core, without the ORM."""

from cryptography.fernet import Fernet

from odoo.tests.common import BaseCase

from ..core.crypto import EncryptionKeyError, SecretBox, SecretDecryptionError, parse_keys
from ..core.exceptions import IntegrationConnectionError, IntegrationHTTPError, describe_transport_error
from ..core.redact import MASK, redact_headers, redact_text, redact_url


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
