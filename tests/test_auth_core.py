"""PKCE and JWT assertions, the plain-Python parts of the newer authentication types."""

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from odoo.tests.common import BaseCase

from ..core import jwt_assertion, pkce
from ..core.exceptions import AssertionKeyError, IntegrationConfigError
from .oauth2_provider import JWTRejected, ec_key_pair, rsa_key_pair, verify_jwt


class TestPkce(BaseCase):
    def test_challenge_of_the_rfc_7636_example(self):
        # RFC 7636, appendix B.
        self.assertEqual(
            pkce.code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )

    def test_verifier_is_long_random_and_unreserved(self):
        verifiers = {pkce.make_verifier() for _i in range(20)}
        self.assertEqual(len(verifiers), 20)
        for verifier in verifiers:
            self.assertTrue(43 <= len(verifier) <= 128)
            self.assertRegex(verifier, r"^[A-Za-z0-9._~-]+$")

    def test_state_is_unguessable_and_stored_as_a_hash(self):
        state = pkce.make_state()
        self.assertGreaterEqual(len(state), 40)
        self.assertNotEqual(state, pkce.make_state())
        self.assertEqual(pkce.state_hash(state), pkce.state_hash(state))
        self.assertNotIn(state, pkce.state_hash(state))
        self.assertNotEqual(pkce.state_hash(state), pkce.state_hash(state + "x"))

    def test_authorization_url_carries_the_flow_and_keeps_the_endpoint_query(self):
        url = pkce.authorization_url(
            "https://login.example.com/tenant/authorize?p=B2C_1_signin&state=forged",
            "client-1",
            "https://odoo.example.com/integration/oauth2/callback",
            "st-1",
            "ch-1",
            scope="offline_access orders.read",
            extra_params={"prompt": "consent", "code_challenge_method": "plain"},
        )
        parts = urlsplit(url)
        self.assertEqual(parts.netloc, "login.example.com")
        self.assertEqual(parts.path, "/tenant/authorize")
        query = parse_qs(parts.query)
        self.assertEqual(
            query,
            {
                "p": ["B2C_1_signin"],
                "prompt": ["consent"],
                "response_type": ["code"],
                "client_id": ["client-1"],
                "redirect_uri": ["https://odoo.example.com/integration/oauth2/callback"],
                "state": ["st-1"],
                "code_challenge": ["ch-1"],
                "code_challenge_method": ["S256"],
                "scope": ["offline_access orders.read"],
            },
            "the flow's own parameters cannot be replaced by the endpoint's query or extras",
        )


class TestJwtAssertion(BaseCase):
    def _decode(self, token):
        return [json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in token.split(".")[:2]]

    def _assertion(self, algorithm, key_text, **claims):
        key = jwt_assertion.load_signing_key(algorithm, key_text)
        values = {"issuer": "odoo", "subject": "svc@odoo", "audience": "https://partner.test/token", "lifetime": 300}
        values.update(claims)
        return jwt_assertion.encode(jwt_assertion.build_claims(**values), algorithm, key, key_id="k1")

    def test_hs256_verifies_with_the_shared_secret(self):
        token = self._assertion("HS256", "a-shared-secret-of-32-bytes-len!", extra={"scope": "orders"})
        claims = verify_jwt(token, "HS256", b"a-shared-secret-of-32-bytes-len!", {"iss": "odoo", "sub": "svc@odoo"})
        self.assertEqual(claims["aud"], "https://partner.test/token")
        self.assertEqual(claims["scope"], "orders")
        self.assertEqual(claims["exp"] - claims["iat"], 300)
        header, _claims = self._decode(token)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT", "kid": "k1"})
        with self.assertRaisesRegex(JWTRejected, "bad signature"):
            verify_jwt(token, "HS256", b"another-secret")

    def test_rs256_verifies_with_the_public_key(self):
        private_pem, public_key = rsa_key_pair()
        token = self._assertion("RS256", private_pem)
        self.assertEqual(verify_jwt(token, "RS256", public_key, {"aud": "https://partner.test/token"})["iss"], "odoo")
        _other_pem, other_public = rsa_key_pair()
        with self.assertRaisesRegex(JWTRejected, "bad signature"):
            verify_jwt(token, "RS256", other_public)

    def test_es256_signature_is_raw_r_and_s(self):
        private_pem, public_key = ec_key_pair()
        token = self._assertion("ES256", private_pem)
        signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
        self.assertEqual(len(signature), 64, "R || S, not DER")
        self.assertEqual(verify_jwt(token, "ES256", public_key)["sub"], "svc@odoo")

    def test_each_assertion_has_its_own_jti(self):
        tokens = [self._assertion("HS256", "s" * 32) for _i in range(3)]
        self.assertEqual(len({self._decode(t)[1]["jti"] for t in tokens}), 3)

    def test_expired_assertion_is_refused_by_the_remote(self):
        token = self._assertion("HS256", "s" * 32, lifetime=60, now=time.time() - 120)
        with self.assertRaisesRegex(JWTRejected, "expired"):
            verify_jwt(token, "HS256", b"s" * 32)

    def test_pasted_pem_without_line_breaks_is_read(self):
        private_pem, public_key = ec_key_pair()
        one_line = private_pem.replace("\n", " ")
        escaped = private_pem.replace("\n", "\\n")  # as in a JSON key file
        for pasted in (one_line, escaped):
            self.assertEqual(verify_jwt(self._assertion("ES256", pasted), "ES256", public_key)["iss"], "odoo")

    def test_keys_that_do_not_fit_are_refused_without_being_echoed(self):
        rsa_pem, _public = rsa_key_pair()
        small_rsa_pem, _public = rsa_key_pair(1024)
        p384_pem, _public = ec_key_pair(ec.SECP384R1())
        garbage = "bm90LWEta2V5LXNlY3JldA=="
        cases = [
            ("ES256", rsa_pem, "ES256 needs an EC private key on the P-256 curve"),
            ("ES256", p384_pem, "P-256"),
            ("RS256", small_rsa_pem, "at least 2048 bits, not 1024"),
            ("RS256", "not a key at all", "not in PEM form"),
            ("RS256", f"-----BEGIN PRIVATE KEY-----\n{garbage}\n-----END PRIVATE KEY-----", "cannot be read"),
            ("HS512", "secret", "unsupported JWT algorithm"),
            ("HS256", "", "no signing key"),
        ]
        for algorithm, key_text, message in cases:
            with self.subTest(algorithm=algorithm, message=message):
                with self.assertRaisesRegex(AssertionKeyError, message) as caught:
                    jwt_assertion.load_signing_key(algorithm, key_text)
                self.assertIsInstance(caught.exception, IntegrationConfigError)
                message = str(caught.exception)
                self.assertNotIn("bm90LWEta2V5LXNlY3JldA", message)
                if len(key_text) > 20:
                    self.assertNotIn(key_text[30:60], message)

    def test_extra_claims_cannot_replace_the_standard_ones(self):
        self.assertEqual(jwt_assertion.check_extra_claims({"scope": "a b", "tenant": 7}), {"scope": "a b", "tenant": 7})
        with self.assertRaisesRegex(ValueError, "cannot set exp, iss"):
            jwt_assertion.build_claims(issuer="odoo", extra={"exp": 1, "iss": "x"})
        with self.assertRaisesRegex(ValueError, "JSON object"):
            jwt_assertion.check_extra_claims(["scope"])
