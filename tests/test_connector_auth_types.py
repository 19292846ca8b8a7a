"""JWT bearer (per call, reused, or exchanged at a token URL) and API key + secret pairs,
against the local provider, which verifies signatures and claims on its own."""

import base64
import json
from datetime import timedelta
from urllib.parse import quote

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from ..const import JWT_BEARER_GRANT
from ..core.exceptions import IntegrationError, IntegrationHTTPError
from .common import CONNECTOR_LOGGER, IntegrationHubCase, Reply, capture_logs
from .oauth2_provider import OAuth2Provider, ec_key_pair, rsa_key_pair

HS_SECRET = "hs256-shared-secret-0123456789+/=abcdef"


def _claims(assertion):
    payload = assertion.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class ProviderCase(IntegrationHubCase):
    def setUp(self):
        super().setUp()
        self.provider = OAuth2Provider()
        self.addCleanup(self.provider.stop)

    def _connector(self, **values):
        return self._create_connector(base_url=self.provider.url + "/api", **values)


@tagged("post_install", "-at_install")
class TestJwtBearer(ProviderCase):
    def _jwt_connector(self, **values):
        vals = {
            "auth_type": "jwt",
            "jwt_algorithm": "HS256",
            "jwt_secret": HS_SECRET,
            "jwt_issuer": "odoo-prod",
            "jwt_subject": "sync@odoo",
            "jwt_audience": "https://partner.test",
            "jwt_lifetime": 120,
            "jwt_extra_claims": '{"tenant": "eu", "scope": "orders.read"}',
        }
        vals.update(values)
        return self._connector(**vals)

    def _provider_checks(self, algorithm, key, **claims):
        self.provider.resource_auth = "jwt"
        self.provider.jwt_algorithm = algorithm
        self.provider.jwt_key = key
        self.provider.jwt_claims = claims or {"iss": "odoo-prod", "sub": "sync@odoo", "aud": "https://partner.test"}

    def test_hs256_signed_per_call_with_the_configured_claims(self):
        self._provider_checks("HS256", HS_SECRET.encode())
        self.provider.jwt_unique_jti = True  # a partner that refuses replays
        connector = self._jwt_connector(jwt_key_id="key-2024")
        for _i in range(2):
            self.assertEqual(connector._request("GET", "/orders").json(), {"ok": True, "sub": "sync@odoo"})
        (first, claims), (second, _claims2) = self.provider.assertions
        self.assertNotEqual(first, second, "a new assertion (and jti) per call")
        self.assertEqual(claims["tenant"], "eu")
        self.assertEqual(claims["scope"], "orders.read")
        self.assertEqual(claims["exp"] - claims["iat"], 120)
        header = json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))
        self.assertEqual(header, {"alg": "HS256", "kid": "key-2024", "typ": "JWT"})

    def test_rs256_reused_until_shortly_before_exp_then_replaced(self):
        private_pem, public_key = rsa_key_pair()
        self._provider_checks("RS256", public_key)
        connector = self._jwt_connector(
            jwt_algorithm="RS256", jwt_private_key=private_pem, jwt_lifetime=300, jwt_reuse=True
        )
        start = fields.Datetime.now()
        sent = []
        # Reused while fresh; replaced 60 s before exp; after a long pause, an expired one
        # (which the provider would refuse) is never sent.
        for offset in (0, 200, 239, 241, 400, 2000):
            with freeze_time(start + timedelta(seconds=offset)):
                self.assertEqual(connector._request("GET", "/orders").status_code, 200, f"at +{offset} s")
            sent.append(self.provider.requests_to("/api/orders")[-1].headers["Authorization"])
        self.assertEqual(len(set(sent[:3])), 1)
        self.assertEqual(len(set(sent)), 3)
        self.assertEqual(sent[3], sent[4])
        self.assertEqual([c["iat"] - int(start.timestamp()) for _t, c in self.provider.assertions][3::2], [241, 2000])

    def test_reused_assertion_refused_is_signed_again_once(self):
        self._provider_checks("HS256", HS_SECRET.encode())
        connector = self._jwt_connector(jwt_reuse=True)
        connector._request("GET", "/orders")
        self.provider.jwt_unique_jti = True  # the partner starts refusing replays
        self.assertEqual(connector._request("GET", "/orders").status_code, 200)
        calls = self.provider.requests_to("/api/orders")
        self.assertEqual(len(calls), 3, "the reused one refused, one retry with a new one")
        self.assertEqual(calls[0].headers["Authorization"], calls[1].headers["Authorization"])
        self.assertNotEqual(calls[1].headers["Authorization"], calls[2].headers["Authorization"])

    def test_wrong_secret_is_refused_without_retry(self):
        self._provider_checks("HS256", b"the-partner-has-another-secret")
        connector = self._jwt_connector()
        with mute_logger(CONNECTOR_LOGGER), self.assertRaises(IntegrationHTTPError) as caught:
            connector._request("GET", "/orders")
        self.assertEqual(caught.exception.status_code, 401)
        self.assertIn("bad signature", str(caught.exception))
        self.assertEqual(len(self.provider.requests_to("/api/orders")), 1)

    def test_es256_assertion_exchanged_at_the_token_url(self):
        private_pem, public_key = ec_key_pair()
        token_url = self.provider.url + "/token"
        self.provider.jwt_algorithm, self.provider.jwt_key = "ES256", public_key
        self.provider.jwt_claims = {"iss": "svc@project.iam", "aud": token_url}
        connector = self._connector(
            auth_type="oauth2",
            oauth2_grant_type="jwt_bearer",
            oauth2_token_url=token_url,
            jwt_algorithm="ES256",
            jwt_private_key=private_pem.replace("\n", " "),  # as a one-line input leaves it
            jwt_issuer="svc@project.iam",
            jwt_extra_claims='{"scope": "https://partner.test/orders"}',
        )
        start = fields.Datetime.now()
        for offset in (0, 10, 3550):  # the access token lives 3600 s: due at 3540
            with freeze_time(start + timedelta(seconds=offset)):
                self.assertEqual(connector._request("GET", "/orders").status_code, 200)
        self.assertEqual(self.provider.grants, [JWT_BEARER_GRANT, JWT_BEARER_GRANT])
        first, second = (r.form() for r in self.provider.requests_to("/token"))
        self.assertEqual(set(first), {"grant_type", "assertion"})
        self.assertNotIn("Authorization", self.provider.requests_to("/token")[0].headers)
        self.assertEqual(_claims(first["assertion"])["aud"], token_url, "the token URL is the default audience")
        self.assertEqual(_claims(first["assertion"])["scope"], "https://partner.test/orders")
        self.assertNotEqual(_claims(first["assertion"])["jti"], _claims(second["assertion"])["jti"])
        self.assertEqual(len(self.provider.requests_to("/api/orders")), 3)

    def test_refused_assertion_at_the_token_url_is_a_clear_error(self):
        private_pem, _public_key = ec_key_pair()
        _other_pem, other_public = ec_key_pair()
        self.provider.jwt_algorithm, self.provider.jwt_key = "ES256", other_public
        connector = self._connector(
            auth_type="oauth2",
            oauth2_grant_type="jwt_bearer",
            oauth2_token_url=self.provider.url + "/token",
            jwt_algorithm="ES256",
            jwt_private_key=private_pem,
        )
        with mute_logger(CONNECTOR_LOGGER), self.assertRaises(IntegrationError) as caught:
            connector._request("GET", "/orders")
        self.assertIn("HTTP 400 (invalid_grant: assertion refused: bad signature", str(caught.exception))
        self.assertEqual(self.provider.requests_to("/api/orders"), [])

    def test_settings_that_cannot_work_are_refused_on_save(self):
        rsa_pem, _public = rsa_key_pair()
        connector = self._jwt_connector()
        cases = [
            ({"jwt_algorithm": "ES256", "jwt_private_key": rsa_pem}, "ES256 needs an EC private key"),
            ({"jwt_lifetime": 7200}, "between 30 and 3600"),
            ({"jwt_extra_claims": '{"exp": 1}'}, "cannot set exp"),
            ({"jwt_extra_claims": "[1, 2]"}, "JSON object"),
            ({"jwt_extra_claims": "{not json"}, "Extra Claims"),
        ]
        for values, message in cases:
            with self.subTest(message=message), self.assertRaises(ValidationError) as caught:
                connector.write(values)
            self.assertIn(message, str(caught.exception))
            self.assertNotIn(rsa_pem.splitlines()[1], str(caught.exception))


@tagged("post_install", "-at_install")
class TestApiKeyPair(ProviderCase):
    def test_both_headers_arrive_under_their_configured_names(self):
        self.provider.resource_auth = "key_pair"
        self.provider.key_pair = (("X-Partner-Id", "pk-live-123"), ("X-Partner-Secret", "ps-live-456"))
        connector = self._connector(
            auth_type="api_key_pair",
            api_key_name="X-Partner-Id",
            api_secret_name="X-Partner-Secret",
            api_key="pk-live-123",
            api_secret="ps-live-456",
        )
        self.assertEqual(connector._request("GET", "/orders").json(), {"ok": True})
        (call,) = self.provider.requests_to("/api/orders")
        self.assertNotIn("Authorization", call.headers)
        self.assertEqual(call.query, {})

    def test_header_names_required_and_distinct(self):
        with self.assertRaisesRegex(ValidationError, "must differ"):
            self._connector(auth_type="api_key_pair", api_key_name="X-Key", api_secret_name="x-key")
        with self.assertRaisesRegex(ValidationError, "API Secret Header is required"):
            self._connector(auth_type="api_key_pair", api_secret_name=" ")


@tagged("post_install", "-at_install")
class TestNewSecretsStayOutOfLogsAndErrors(ProviderCase):
    def test_key_pair_jwt_secrets_and_assertions_absent_from_logs_errors_and_call_logs(self):
        logs = capture_logs(self)
        sent = []

        def echoing(request):
            # A careless partner that echoes what it got, headers and body, in its errors.
            sent.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
            if request.path == "/token":
                sent.append(request.form().get("assertion", ""))
                return Reply(400, {"error": "invalid_grant", "error_description": request.body.decode()})
            return Reply(500, {"echo": dict(request.headers)})

        self.server.respond_with(echoing)
        private_pem, _public = rsa_key_pair()
        secrets = {"key": "pk+Live/0001=%", "secret": "ps Live:0002&", "hs": HS_SECRET}
        connectors = [
            # Header names that look like nothing secret: masked because they are configured.
            self._create_connector(
                auth_type="api_key_pair",
                api_key_name="X-Partner",
                api_secret_name="X-Client",
                api_key=secrets["key"],
                api_secret=secrets["secret"],
            ),
            self._create_connector(auth_type="jwt", jwt_algorithm="HS256", jwt_secret=secrets["hs"]),
            self._create_connector(auth_type="jwt", jwt_algorithm="RS256", jwt_private_key=private_pem, jwt_reuse=True),
            self._create_connector(
                auth_type="oauth2",
                oauth2_grant_type="jwt_bearer",
                oauth2_token_url=self.server.url + "/token",
                jwt_algorithm="RS256",
                jwt_private_key=private_pem,
            ),
        ]
        messages = []
        for connector in connectors:
            connector.action_debug_start()  # the call log records every exchange too
            # Not assertRaises: Odoo's rolls back the error records written on the way.
            try:
                with mute_logger(CONNECTOR_LOGGER):
                    connector._request("POST", "/orders", json={"order": 1})
            except IntegrationError as exc:
                messages.append(str(exc))
        self.assertEqual(len(messages), 4, "every call failed")
        self.env.invalidate_all()
        errors = self.env["integration.error"].search([("connector_id", "in", [c.id for c in connectors])])
        self.assertEqual(len(errors), 4)
        stored = [
            " ".join(str(e[f] or "") for f in ("message", "request_excerpt", "response_excerpt", "traceback", "url"))
            for e in errors
        ]
        call_logs = self.env["integration.call.log"].search([("connector_id", "in", [c.id for c in connectors])])
        self.assertTrue(call_logs)
        stored += [
            " ".join(str(c[f] or "") for f in ("request_headers", "request_body", "response_body", "error", "url"))
            for c in call_logs
        ]
        self.assertIn('"X-Partner": "***"', " ".join(stored), "the pair's headers are masked by name")
        sent = [a for a in sent if a]
        self.assertEqual(len(sent), 3, "three assertions were sent (and echoed back)")
        values = [*secrets.values(), private_pem.splitlines()[1], *sent]
        values += [quote(v, safe="") for v in secrets.values()]
        haystacks = {"log": logs.text, "error message": "\n".join(messages), "stored": "\n".join(stored)}
        for value in values:
            for where, text in haystacks.items():
                self.assertNotIn(value, text, f"secret found in {where}")
