"""Each authentication type against a real HTTP server on 127.0.0.1."""

import base64
import socket
import threading
import time
from datetime import timedelta

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import AccessError
from odoo.tests import tagged
from odoo.tools import mute_logger

from ..core.exceptions import (
    IntegrationAuthError,
    IntegrationConfigError,
    IntegrationConnectionError,
    IntegrationHTTPError,
)
from .common import CONNECTOR_LOGGER, IntegrationHubCase, LocalServer, Reply


def basic_credentials(request):
    scheme, _sep, value = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return None
    return tuple(base64.b64decode(value).decode().split(":", 1))


class OAuth2Server:
    """Responder: a token endpoint issuing tok-1, tok-2... and an API accepting tokens."""

    def __init__(self, expires_in=3600, rejected_tokens=(), token_status=200):
        self.expires_in = expires_in
        self.rejected_tokens = set(rejected_tokens)
        self.token_status = token_status
        self.issued = []

    def __call__(self, request):
        if request.path == "/oauth/token":
            if self.token_status != 200:
                return Reply(self.token_status, {"error": "invalid_client", "error_description": "unknown client"})
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            body = {"access_token": token, "token_type": "Bearer"}
            if self.expires_in:
                body["expires_in"] = self.expires_in
            return Reply(200, body)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in self.issued or token in self.rejected_tokens:
            return Reply(401, {"error": "invalid_token"})
        return Reply(200, {"token": token})


@tagged("post_install", "-at_install")
class TestConnectorAuth(IntegrationHubCase):
    def test_none(self):
        connector = self._create_connector(default_headers='{"Accept": "application/json", "X-Tenant": "eu"}')
        response = connector._request("GET", "/orders", params={"page": "2"})
        self.assertEqual(response.json(), {"ok": True})
        (request,) = self.server.received
        self.assertEqual(request.path, "/api/orders")
        self.assertEqual(request.query, {"page": "2"})
        self.assertNotIn("Authorization", request.headers)
        self.assertEqual(request.headers["X-Tenant"], "eu")
        self.assertEqual(request.headers["Accept"], "application/json")

    def test_api_key_header(self):
        connector = self._create_connector(auth_type="api_key", api_key_name="X-Shop-Key", api_key="key-123456")
        connector._request("POST", "orders", json={"a": 1})
        (request,) = self.server.received
        self.assertEqual(request.headers["X-Shop-Key"], "key-123456")
        self.assertEqual(request.json(), {"a": 1})
        self.assertEqual(request.query, {})

    def test_api_key_query(self):
        connector = self._create_connector(
            auth_type="api_key", api_key_location="query", api_key_name="apikey", api_key="key-654321"
        )
        connector._request("GET", "/orders", params={"status": "new"})
        (request,) = self.server.received
        self.assertEqual(request.query, {"status": "new", "apikey": "key-654321"})
        self.assertNotIn("X-API-Key", request.headers)

    def test_bearer(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-abcdef")
        connector._request("GET", "/me")
        self.assertEqual(self.server.received[0].headers["Authorization"], "Bearer bt-abcdef")

    def test_basic(self):
        connector = self._create_connector(auth_type="basic", basic_username="odoo", basic_password="pa:ss-wörd")
        connector._request("GET", "/me")
        self.assertEqual(basic_credentials(self.server.received[0]), ("odoo", "pa:ss-wörd"))

    def test_missing_secret(self):
        connector = self._create_connector(auth_type="bearer")
        with self.assertRaisesRegex(IntegrationConfigError, "Bearer Token is not set"):
            connector._request("GET", "/me")
        self.assertEqual(self.server.received, [])

    def _oauth2_connector(self, **values):
        vals = {
            "auth_type": "oauth2",
            "oauth2_token_url": self.server.url + "/oauth/token",
            "oauth2_client_id": "client-1",
            "oauth2_client_secret": "client-secret-xyz",
            "oauth2_scope": "orders:read",
            "oauth2_audience": "https://api.partner.test",
        }
        vals.update(values)
        return self._create_connector(**vals)

    def test_oauth2_client_credentials_basic(self):
        oauth = OAuth2Server()
        self.server.respond_with(oauth)
        connector = self._oauth2_connector()
        self.assertEqual(connector._request("GET", "/orders").json(), {"token": "tok-1"})
        (token_request,) = self.server.requests_to("/oauth/token")
        self.assertEqual(token_request.method, "POST")
        self.assertEqual(
            token_request.form(),
            {"grant_type": "client_credentials", "scope": "orders:read", "audience": "https://api.partner.test"},
        )
        self.assertEqual(basic_credentials(token_request), ("client-1", "client-secret-xyz"))
        self.assertEqual(self.server.requests_to("/api/orders")[0].headers["Authorization"], "Bearer tok-1")

    def test_oauth2_client_secret_post(self):
        self.server.respond_with(OAuth2Server())
        connector = self._oauth2_connector(oauth2_client_auth="body", oauth2_scope=False, oauth2_audience=False)
        connector._request("GET", "/orders")
        (token_request,) = self.server.requests_to("/oauth/token")
        self.assertNotIn("Authorization", token_request.headers)
        self.assertEqual(
            token_request.form(),
            {"grant_type": "client_credentials", "client_id": "client-1", "client_secret": "client-secret-xyz"},
        )

    def test_oauth2_token_cached_in_database(self):
        self.server.respond_with(OAuth2Server())
        connector = self._oauth2_connector()
        for _i in range(3):
            connector._request("GET", "/orders")
        self.assertEqual(len(self.server.requests_to("/oauth/token")), 1)
        self.assertEqual(len(self.server.requests_to("/api/orders")), 3)
        self.env.invalidate_all()  # the token was stored through its own cursor
        token = self.env["integration.oauth.token"].search([("connector_id", "=", connector.id)])
        self.assertEqual(len(token), 1)
        self.env.flush_all()
        self.env.cr.execute("SELECT access_token_encrypted FROM integration_oauth_token WHERE id = %s", [token.id])
        (ciphertext,) = self.env.cr.fetchone()
        self.assertTrue(ciphertext)
        self.assertNotIn("tok-1", ciphertext)
        self.assertEqual(token._get_secret("access_token"), "tok-1")

    def _issued_after_calls_at(self, expires_in, offsets):
        """Call at each offset (seconds, frozen clock); the tokens issued after each call."""
        oauth = OAuth2Server(expires_in=expires_in)
        self.server.respond_with(oauth)
        connector = self._oauth2_connector()
        start = fields.Datetime.now()
        issued = []
        for offset in offsets:
            with freeze_time(start + timedelta(seconds=offset)):
                response = connector._request("GET", "/orders")
            issued.append(list(oauth.issued))
        return issued, response

    def test_oauth2_refresh_before_expiry(self):
        issued, response = self._issued_after_calls_at(3600, [0, 3500, 3550])
        self.assertEqual(issued[1], ["tok-1"], "a token 100 s from expiry is reused")
        self.assertEqual(issued[2], ["tok-1", "tok-2"], "a token 50 s from expiry is refreshed")
        self.assertEqual(response.json(), {"token": "tok-2"})

    def test_oauth2_short_lived_token_margin(self):
        issued, _response = self._issued_after_calls_at(20, [0, 9, 11])
        self.assertEqual(len(issued[1]), 1)
        self.assertEqual(len(issued[2]), 2, "refreshed after half of a short lifetime")

    def test_oauth2_single_retry_on_401(self):
        oauth = OAuth2Server(rejected_tokens={"tok-1"})
        self.server.respond_with(oauth)
        connector = self._oauth2_connector()
        self.assertEqual(connector._request("GET", "/orders").json(), {"token": "tok-2"})
        self.assertEqual(oauth.issued, ["tok-1", "tok-2"])
        self.assertEqual(
            [r.headers["Authorization"] for r in self.server.requests_to("/api/orders")],
            ["Bearer tok-1", "Bearer tok-2"],
        )

    def test_oauth2_401_twice_is_an_error_without_loop(self):
        oauth = OAuth2Server(rejected_tokens={"tok-1", "tok-2", "tok-3"})
        self.server.respond_with(oauth)
        connector = self._oauth2_connector()
        with self.assertRaises(IntegrationHTTPError) as caught:
            connector._request("GET", "/orders")
        self.assertEqual(caught.exception.status_code, 401)
        self.assertFalse(caught.exception.retryable)
        self.assertEqual(len(self.server.requests_to("/api/orders")), 2)
        self.assertEqual(len(oauth.issued), 2)

    def test_oauth2_forget_token(self):
        oauth = OAuth2Server()
        self.server.respond_with(oauth)
        connector = self._oauth2_connector()
        connector._request("GET", "/orders")
        self.env.invalidate_all()  # the token was stored through its own cursor
        token = self.env["integration.oauth.token"].search([("connector_id", "=", connector.id)])
        self.assertTrue(token.access_token_is_set)
        with self.assertRaises(AccessError):
            token.with_user(self.operator).action_forget()
        token.with_user(self.manager).action_forget()
        self.assertFalse(token.access_token_is_set)
        connector._request("GET", "/orders")
        self.assertEqual(oauth.issued, ["tok-1", "tok-2"])
        self.assertEqual(self.env["integration.oauth.token"].search_count([("connector_id", "=", connector.id)]), 1)

    @mute_logger(CONNECTOR_LOGGER)
    def test_oauth2_token_endpoint_refuses(self):
        self.server.respond_with(OAuth2Server(token_status=401))
        connector = self._oauth2_connector()
        with self.assertRaises(IntegrationAuthError) as caught:
            connector._request("GET", "/orders")
        message = str(caught.exception)
        self.assertIn("HTTP 401", message)
        self.assertIn("invalid_client", message)
        self.assertNotIn("client-secret-xyz", message)
        self.assertEqual(self.server.requests_to("/api/orders"), [])

    def test_http_error_is_typed_and_readable(self):
        self.server.respond_with(lambda request: Reply(422, {"message": "sku is required"}))
        connector = self._create_connector()
        with self.assertRaises(IntegrationHTTPError) as caught:
            connector._request("POST", "/orders", json={})
        error = caught.exception
        self.assertEqual(error.status_code, 422)
        self.assertFalse(error.retryable)
        self.assertIn("POST", str(error))
        self.assertIn("/api/orders", str(error))
        self.assertIn("sku is required", str(error))

    def test_absolute_url_on_other_host_refused(self):
        connector = self._create_connector()
        self.assertEqual(connector._request("GET", self.server.url + "/api/x").status_code, 200)
        with self.assertRaisesRegex(IntegrationConfigError, "only calls"):
            connector._request("GET", "http://localhost:1/elsewhere")
        self.assertEqual(len(self.server.received), 1)


@tagged("post_install", "-at_install")
class TestConnectorTransport(IntegrationHubCase):
    def _refusing_url(self):
        """A port that is bound (so nobody else takes it) but not listening: refused."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.addCleanup(sock.close)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def test_tls_switch_back_on_takes_effect(self):
        tls_server = LocalServer(tls=True)
        self.addCleanup(tls_server.stop)
        with mute_logger(CONNECTOR_LOGGER):
            connector = self._create_connector(base_url=tls_server.url, verify_tls=False)
            self.assertEqual(connector._request("GET", "/a").status_code, 200)
        connector.verify_tls = True
        with self.assertRaisesRegex(IntegrationConnectionError, "TLS error"):
            connector._request("GET", "/b", log_errors=False)
        self.assertEqual(len(tls_server.received), 1, "no verified call rode the unverified connection")

    def test_redirect_is_an_error_not_a_success(self):
        self.server.respond_with(lambda request: Reply(302, "", {"Location": "https://login.example.com/?token=abc"}))
        connector = self._create_connector()
        with self.assertRaisesRegex(
            IntegrationHTTPError, "HTTP 302.*redirected to https://login.example.com/"
        ) as caught:
            connector._request("GET", "/health", log_errors=False)
        self.assertNotIn("abc", str(caught.exception))
        connector.action_test_connection()
        self.assertEqual(connector.health_state, "failing")

    def test_repeated_query_keys(self):
        connector = self._create_connector(
            auth_type="api_key", api_key_location="query", api_key_name="k", api_key="ak-rep-123"
        )
        connector._request("GET", "/items", params=[("id", "1"), ("id", "2")])
        self.assertEqual(self.server.received[0].raw_query, "id=1&id=2&k=ak-rep-123")

    def test_tls_verified_by_default(self):
        tls_server = LocalServer(tls=True)
        self.addCleanup(tls_server.stop)
        connector = self._create_connector(base_url=tls_server.url)
        self.assertTrue(connector.verify_tls)
        with self.assertRaisesRegex(IntegrationConnectionError, "TLS error .*certificate verify failed"):
            connector._request("GET", "/health")
        self.assertEqual(tls_server.received, [], "no request is sent over an untrusted channel")

    def test_tls_exception_is_explicit_and_logged(self):
        tls_server = LocalServer(tls=True)
        self.addCleanup(tls_server.stop)
        logger = CONNECTOR_LOGGER
        with self.assertLogs(logger, "WARNING") as logs:
            connector = self._create_connector(base_url=tls_server.url, verify_tls=False)
            self.env.flush_all()
            response = connector._request("GET", "/health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(tls_server.received), 1)
        output = "\n".join(logs.output)
        self.assertIn("TLS certificate verification disabled on connector", output)
        self.assertIn("without TLS certificate verification", output)

    def test_read_timeout(self):
        release = threading.Event()
        self.addCleanup(release.set)

        def slow(request):
            release.wait(10)
            return Reply()

        self.server.respond_with(slow)
        connector = self._create_connector(timeout_read=0.3)
        started = time.monotonic()
        with self.assertRaisesRegex(IntegrationConnectionError, "no answer within 0.3 s") as caught:
            connector._request("GET", "/slow")
        self.assertLess(time.monotonic() - started, 5, "gave up long before the server answered")
        self.assertTrue(caught.exception.retryable)

    def test_connection_refused(self):
        connector = self._create_connector(base_url=self._refusing_url())
        with self.assertRaisesRegex(
            IntegrationConnectionError, r"connection failed \(\[Errno 111\] Connection refused\)"
        ):
            connector._request("GET", "/health")

    def test_test_connection_ok(self):
        connector = self._create_connector()
        action = connector.action_test_connection()
        self.assertEqual(action["params"]["type"], "success")
        self.assertEqual(self.server.received[0].path, "/api/health")
        self.assertEqual(self.server.received[0].method, "GET")
        self.assertEqual(connector.health_state, "ok")
        self.assertEqual(connector.last_test_status_code, 200)
        self.assertGreaterEqual(connector.last_test_latency_ms, 0)
        self.assertTrue(connector.last_test_at)
        self.assertIn("HTTP 200", connector.last_test_message)

    def test_test_connection_http_error(self):
        self.server.respond_with(lambda request: Reply(503, "maintenance until 10:00", {"Retry-After": "60"}))
        connector = self._create_connector()
        action = connector.action_test_connection()
        self.assertEqual(action["params"]["type"], "danger")
        self.assertEqual(connector.health_state, "failing")
        self.assertEqual(connector.last_test_status_code, 503)
        self.assertIn("HTTP 503", connector.last_test_message)
        self.assertIn("maintenance until 10:00", connector.last_test_message)

    def test_test_connection_unreachable(self):
        connector = self._create_connector(base_url=self._refusing_url())
        connector.action_test_connection()
        self.assertEqual(connector.health_state, "failing")
        self.assertEqual(connector.last_test_status_code, 0)
        self.assertIn("connection failed", connector.last_test_message)
