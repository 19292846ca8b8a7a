"""OAuth2 authorization code with PKCE: Connect through the browser redirects, the callback,
refresh with rotation, and what the manager sees when something goes wrong."""

import time
from datetime import timedelta
from unittest.mock import MagicMock, patch
from urllib.parse import parse_qs, urlsplit

from freezegun import freeze_time

from odoo import fields, http
from odoo.exceptions import AccessError
from odoo.tests import HttpCase, tagged
from odoo.tools import mute_logger

from ..const import OAUTH2_CALLBACK_ROUTE, OAUTH2_CONNECT_ROUTE_PREFIX
from ..core.exceptions import IntegrationHTTPError, IntegrationReconnectNeededError
from ..models.connector.oauth2_connect import CONNECT_LINK_WINDOW
from .common import CONNECTOR_LOGGER, OAUTH2_ROUTE_LOGGER, IntegrationHubMixin, capture_logs, run_job
from .oauth2_provider import OAuth2Provider


@tagged("post_install", "-at_install")
def _tampered(token):
    """``token`` with its last hex digit changed (to another one: a token ending in "0" stayed
    valid when the last digit was simply set to "0", one run in sixteen)."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


class TestOAuth2AuthorizationCode(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        cls._setup_records()

    def setUp(self):
        super().setUp()
        self.provider = OAuth2Provider()
        self.addCleanup(self.provider.stop)

    def _connector(self, **values):
        vals = {
            "auth_type": "oauth2",
            "oauth2_grant_type": "authorization_code",
            "base_url": self.provider.url + "/api",
            "oauth2_authorize_url": self.provider.url + "/authorize",
            "oauth2_token_url": self.provider.url + "/token",
            "oauth2_client_id": self.provider.client_id,
            "oauth2_client_secret": self.provider.client_secret,
            "oauth2_scope": "orders.read offline_access",
        }
        vals.update(values)
        return self._create_connector(**vals)

    def _token(self, connector):
        self.env.invalidate_all()  # tokens are written through cursors of their own
        return self.env["integration.oauth.token"].search([("connector_id", "=", connector.id)])

    def _press_connect(self, connector, login="ih_manager", follow=True):
        """As ``login`` in a browser session: the Connect button's action, then its link."""
        self.authenticate(login, f"{login}_pw1")
        action = self.make_jsonrpc_request(
            "/web/dataset/call_kw/integration.connector/action_oauth2_connect",
            {"model": connector._name, "method": "action_oauth2_connect", "args": [connector.ids], "kwargs": {}},
        )
        self.assertEqual(action["type"], "ir.actions.act_url")
        return self.url_open(action["url"], allow_redirects=follow)

    def _failing_call(self, connector, exception):
        """The error of a call that must fail. (Not Odoo's assertRaises: it rolls its block
        back, and with it what the connector committed through cursors of its own, which
        production keeps.)"""
        try:
            connector._request("GET", "/orders")
        except exception as exc:
            return exc
        self.fail(f"{exception.__name__} not raised")

    def _connected(self):
        connector = self._connector()
        response = self._press_connect(connector)
        self.assertEqual(urlsplit(response.url).path, f"/odoo/integration.connector/{connector.id}")
        self.assertEqual(self._token(connector).connection_state, "connected")
        return connector

    def test_connect_round_trip_through_the_browser(self):
        connector = self._connector()
        logs = capture_logs(self, names=("werkzeug",))
        response = self._press_connect(connector)

        # Odoo -> provider -> Odoo callback -> the connector form.
        self.assertEqual(response.status_code, 200)
        self.assertEqual([r.status_code for r in response.history], [303, 302, 303])
        connect, authorize, callback = (r.url for r in response.history)
        self.assertTrue(authorize.startswith(self.provider.url + "/authorize?"))
        self.assertTrue(callback.startswith(f"{self.base_url()}{OAUTH2_CALLBACK_ROUTE}?"))
        self.assertEqual(urlsplit(response.url).path, f"/odoo/integration.connector/{connector.id}")
        query = parse_qs(urlsplit(authorize).query)
        self.assertEqual(query["code_challenge_method"], ["S256"])
        self.assertEqual(query["redirect_uri"], [self.base_url() + OAUTH2_CALLBACK_ROUTE])
        self.assertEqual(query["scope"], ["orders.read offline_access"])

        # The code was exchanged once, with the verifier (the provider checks it against the challenge).
        self.assertEqual(self.provider.grants, ["authorization_code"])
        (token_request,) = self.provider.requests_to("/token")
        self.assertEqual(token_request.form()["redirect_uri"], self.base_url() + OAUTH2_CALLBACK_ROUTE)
        self.assertGreaterEqual(len(token_request.form()["code_verifier"]), 43)
        self.assertNotIn(token_request.form()["code_verifier"], authorize, "only the challenge travels")

        token = self._token(connector)
        (access_token,) = self.provider.issued_access_tokens
        (refresh_token,) = self.provider.valid_refresh_tokens
        self.assertEqual(token._get_secret("access_token"), access_token)
        self.assertEqual(token._get_secret("refresh_token"), refresh_token)
        self.env.cr.execute(
            "SELECT access_token_encrypted, refresh_token_encrypted FROM integration_oauth_token WHERE id = %s",
            [token.id],
        )
        for ciphertext in self.env.cr.fetchone():
            self.assertTrue(ciphertext.startswith("gAAAAA"), "stored encrypted")
        self.assertFalse(token.pending_state_hash or token.pending_verifier_is_set, "the authorization is used up")
        self.assertEqual(connector.oauth2_connection_state, "connected")
        self.assertIn("Connected by Integration Manager", connector.oauth2_connection_message)
        self.assertIn("Connected to the OAuth2 provider", " ".join(connector.message_ids.mapped("body")))

        # The connector calls the API with the token.
        self.assertEqual(connector._request("GET", "/orders").json(), {"ok": True, "token": access_token})

        # The code travelled in the callback's request line: masked in the server's log.
        code = parse_qs(urlsplit(callback).query)["code"][0]
        self.assertIn(OAUTH2_CALLBACK_ROUTE, logs.text, "the capture saw the callback's request line")
        self.assertNotIn(code, logs.text)

        # Replaying the callback (the browser's Back button, or a thief) does nothing.
        with mute_logger(OAUTH2_ROUTE_LOGGER):
            replay = self.url_open(callback)
        self.assertEqual(replay.status_code, 400)
        self.assertIn("does not match any Connect", replay.text)
        self.assertEqual(len(self.provider.requests_to("/token")), 1)

    def test_public_client_sends_client_id_and_verifier_only(self):
        self.provider.client_secret = None
        connector = self._connected_public()
        form = self.provider.requests_to("/token")[0].form()
        self.assertEqual(set(form), {"grant_type", "code", "redirect_uri", "code_verifier", "client_id"})
        self.assertEqual(connector._request("GET", "/orders").status_code, 200)

    def _connected_public(self):
        connector = self._connector(oauth2_client_secret=False)
        self._press_connect(connector)
        self.assertEqual(self._token(connector).connection_state, "connected")
        return connector

    def test_refresh_when_the_access_token_is_due_keeps_the_rotated_refresh_token(self):
        connector = self._connected()
        first_refresh = self.provider.valid_refresh_tokens[0]
        start = fields.Datetime.now()
        with freeze_time(start + timedelta(seconds=3550)):  # 50 s before expiry: due
            response = connector._request("GET", "/orders")
        self.assertEqual(self.provider.grants, ["authorization_code", "refresh_token"])
        refresh_form = self.provider.requests_to("/token")[1].form()
        self.assertEqual(refresh_form["refresh_token"], first_refresh)
        self.assertEqual(response.json()["token"], self.provider.issued_access_tokens[-1])
        (rotated,) = self.provider.valid_refresh_tokens
        self.assertNotEqual(rotated, first_refresh)
        self.assertEqual(self._token(connector)._get_secret("refresh_token"), rotated)
        # The next refresh works only with the rotated token (the first one is retired).
        with freeze_time(start + timedelta(seconds=2 * 3550)):
            connector._request("GET", "/orders")
        self.assertEqual(self.provider.requests_to("/token")[2].form()["refresh_token"], rotated)
        self.assertEqual(self.provider.grants[-1], "refresh_token")
        self.assertEqual(self._token(connector).connection_state, "connected")

    def test_refresh_after_a_401_then_one_retry(self):
        connector = self._connected()
        self.provider.revoke_access_tokens()
        response = connector._request("GET", "/orders")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.provider.grants, ["authorization_code", "refresh_token"])
        calls = self.provider.requests_to("/api/orders")
        sent = [c.headers["Authorization"] for c in calls]
        self.assertEqual(sent, [f"Bearer {t}" for t in self.provider.issued_access_tokens], "the revoked, then the new")

    def test_refused_refresh_means_reconnect_needed_and_calls_fail_without_a_loop(self):
        connector = self._connected()
        self.provider.refuse_refresh = True
        self.provider.revoke_access_tokens()
        with mute_logger(CONNECTOR_LOGGER):
            error = self._failing_call(connector, IntegrationReconnectNeededError)
        self.assertIn("needs to be reconnected", str(error))
        self.assertIn("invalid_grant", str(error))
        self.assertIn("press Connect", str(error))
        self.assertEqual(len(self.provider.requests_to("/api/orders")), 1)
        self.assertEqual(len(self.provider.requests_to("/token")), 2, "the code, then one refused refresh")

        token = self._token(connector)
        self.assertEqual(connector.oauth2_connection_state, "reconnect")
        self.assertIn("refused its refresh token", connector.oauth2_connection_message)
        self.assertFalse(token.access_token_is_set or token.refresh_token_is_set)
        self.assertIn("needs to be reconnected", " ".join(connector.message_ids.mapped("body")))

        # Later calls fail at once, without asking anyone, in a button or a job.
        received = len(self.provider.received)
        error = self._failing_call(connector, IntegrationReconnectNeededError)
        self.assertRegex(str(error), "refused or revoked.*press Connect")
        uuid = connector._enqueue_call("GET", "/orders", operation="Import orders").uuid
        outcome = run_job(self.env, uuid)
        self.assertIsInstance(outcome, IntegrationReconnectNeededError)
        self.assertEqual(self.env["queue.job"].search([("uuid", "=", uuid)]).state, "failed", "not retried")
        self.assertEqual(len(self.provider.received), received, "nothing sent")

        # Connect again: back in business.
        self.provider.refuse_refresh = False
        self._press_connect(connector)
        self.assertEqual(connector._request("GET", "/orders").status_code, 200)
        self.assertEqual(self._token(connector).connection_state, "connected")

    def test_denied_consent_is_shown_on_the_form(self):
        connector = self._connector()
        self.provider.deny = True
        response = self._press_connect(connector)
        self.assertEqual(urlsplit(response.url).path, f"/odoo/integration.connector/{connector.id}")
        token = self._token(connector)
        self.assertEqual(token.connection_state, "disconnected")
        self.assertIn("did not grant access (access_denied: The user denied access)", token.connection_message)
        self.assertEqual(self.provider.requests_to("/token"), [])
        self.assertFalse(token.pending_state_hash, "the authorization is over")
        with self.assertRaisesRegex(IntegrationReconnectNeededError, "is not connected"):
            connector._request("GET", "/orders")

    def test_forged_or_foreign_state_is_refused_and_the_real_one_still_works(self):
        connector = self._connector()
        to_provider = self._press_connect(connector, follow=False)
        self.assertEqual(to_provider.status_code, 303)
        with mute_logger(OAUTH2_ROUTE_LOGGER):
            forged = self.url_open(f"{OAUTH2_CALLBACK_ROUTE}?code=stolen-code&state=forged-state")
        self.assertEqual(forged.status_code, 400)
        self.assertIn("does not match any Connect", forged.text)

        # The provider's genuine answer, brought back by another browser session of the same user.
        answer = self.url_open(to_provider.headers["Location"], allow_redirects=False)
        callback = answer.headers["Location"]
        first_session, first_opener = self.session, self.opener
        self.session = None  # kept: authenticate() would delete it
        other_session = self.authenticate("ih_manager", "ih_manager_pw1")
        self.addCleanup(http.root.session_store.delete, other_session)
        with mute_logger(OAUTH2_ROUTE_LOGGER):
            foreign = self.url_open(callback)
        self.assertEqual(foreign.status_code, 400)
        self.assertIn("another session", foreign.text)
        self.assertEqual(self.provider.requests_to("/token"), [], "no code exchanged")
        self.assertEqual(self._token(connector).connection_state, "disconnected")

        # In the session that pressed Connect, the same answer connects.
        self.session, self.opener = first_session, first_opener
        done = self.url_open(callback)
        self.assertEqual(urlsplit(done.url).path, f"/odoo/integration.connector/{connector.id}")
        self.assertEqual(self._token(connector).connection_state, "connected")

    def test_expired_code_is_reported(self):
        connector = self._connector()
        self.provider.code_lifetime = -1  # expired before it arrives
        logs = capture_logs(self)
        response = self._press_connect(connector)
        self.assertEqual(urlsplit(response.url).path, f"/odoo/integration.connector/{connector.id}")
        token = self._token(connector)
        self.assertEqual(token.connection_state, "disconnected")
        self.assertIn("refused the authorization code (expired or already used)", token.connection_message)
        self.assertIn("authorization code expired", token.connection_message)
        self.assertFalse(token.access_token_is_set)
        code = parse_qs(urlsplit(response.history[-1].url).query)["code"][0]
        self.assertNotIn(code, token.connection_message)
        logged = "\n".join(logs.lines)
        self.assertIn("authorization code expired: ", logged, "the refusal is logged, with the provider's words")
        self.assertNotIn(code, logged, "the code the provider quoted is masked in the log")
        verifier = self.provider.requests_to("/token")[-1].form()["code_verifier"]
        self.assertNotIn(verifier, logged)
        self.assertNotIn(verifier, token.connection_message)

    def test_authorization_left_too_long_is_dropped(self):
        connector = self._connector()
        to_provider = self._press_connect(connector, follow=False)
        token = self._token(connector)
        token.pending_expires_at = fields.Datetime.now() - timedelta(seconds=1)
        response = self.url_open(to_provider.headers["Location"])
        self.assertEqual(urlsplit(response.url).path, f"/odoo/integration.connector/{connector.id}")
        token = self._token(connector)
        self.assertIn("not completed within 10 minutes", token.connection_message)
        self.assertEqual(self.provider.requests_to("/token"), [], "the code was not exchanged")
        self.assertEqual(token.connection_state, "disconnected")

    def test_disconnect_forgets_the_tokens(self):
        connector = self._connected()
        with self.assertRaises(AccessError):
            connector.with_user(self.operator).action_oauth2_disconnect()
        connector.with_user(self.manager).action_oauth2_disconnect()
        token = self._token(connector)
        self.assertFalse(token.access_token_is_set or token.refresh_token_is_set)
        self.assertEqual(connector.oauth2_connection_state, "disconnected")
        self.assertIn("Disconnected by Integration Manager", connector.oauth2_connection_message)
        with self.assertRaisesRegex(IntegrationReconnectNeededError, "is not connected"):
            connector._request("GET", "/orders")

    def test_only_managers_connect(self):
        connector = self._connector()
        with self.assertRaises(AccessError):
            connector.with_user(self.operator).action_oauth2_connect()
        # A Connect link made for someone else does not work for an operator either.
        link_token = connector.with_user(self.manager)._oauth2_connect_token("the manager's session")
        self.authenticate("ih_operator", "ih_operator_pw1")
        response = self.url_open(f"{OAUTH2_CONNECT_ROUTE_PREFIX}/{connector.id}?token={link_token}")
        self.assertEqual(response.status_code, 403)
        self.assertEqual(self.provider.requests_to("/authorize"), [])

    def test_a_connect_link_works_only_in_its_session_and_for_a_while(self):
        connector = self._connector()
        self.authenticate("ih_manager", "ih_manager_pw1")
        binding = connector.with_user(self.manager)._oauth2_session_binding
        url = f"{OAUTH2_CONNECT_ROUTE_PREFIX}/{connector.id}?token="
        fake = MagicMock()
        with patch("odoo.addons.integration_hub.models.connector.oauth2_connect.request", new=fake):
            fake.session.sid = self.session.sid
            this_session = binding()
            fake.session.sid = "another-browser"
            other_session = binding()
        as_manager = connector.with_user(self.manager)
        window = int(time.time() // CONNECT_LINK_WINDOW)
        refused = {
            "another session": as_manager._oauth2_connect_token(other_session),
            "made 20 minutes ago": as_manager._oauth2_connect_token(this_session, window - 2),
            "no session": as_manager._oauth2_connect_token(""),
            "tampered": _tampered(as_manager._oauth2_connect_token(this_session)),
        }
        for why, token in refused.items():
            with self.subTest(why):
                self.assertEqual(self.url_open(url + token, allow_redirects=False).status_code, 403)
        self.assertEqual(self.provider.requests_to("/authorize"), [])
        for token in (
            as_manager._oauth2_connect_token(this_session, window - 1),
            as_manager._oauth2_connect_token(this_session),
        ):
            response = self.url_open(url + token, allow_redirects=False)
            self.assertEqual(response.status_code, 303)
            self.assertTrue(response.headers["Location"].startswith(self.provider.url + "/authorize?"))

    def test_a_401_twice_after_refresh_is_an_error(self):
        connector = self._connected()
        self.provider.resource_auth = "key_pair"  # refuses every bearer token
        with self.assertRaises(IntegrationHTTPError) as caught:
            connector._request("GET", "/orders")
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(len(self.provider.requests_to("/api/orders")), 2)
        self.assertEqual(self.provider.grants, ["authorization_code", "refresh_token"])


@tagged("post_install", "-at_install")
class TestOAuth2ConnectTour(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def test_connect_and_disconnect_in_the_browser(self):
        provider = OAuth2Provider()
        self.addCleanup(provider.stop)
        connector = self._create_connector(
            name="Tour Graph",
            auth_type="oauth2",
            oauth2_grant_type="authorization_code",
            base_url=provider.url + "/api",
            oauth2_authorize_url=provider.url + "/authorize",
            oauth2_token_url=provider.url + "/token",
            oauth2_client_id=provider.client_id,
            oauth2_client_secret=provider.client_secret,
        )
        self.start_tour(
            f"/odoo/integration.connector/{connector.id}", "integration_hub_oauth2_connect_tour", login="admin"
        )
        self.assertEqual(provider.grants, ["authorization_code"], "connected through the provider, once")
        self.assertEqual(len(provider.requests_to("/authorize")), 1)
        self.env.invalidate_all()
        token = self.env["integration.oauth.token"].search([("connector_id", "=", connector.id)])
        self.assertEqual(token.connection_state, "disconnected")
        self.assertFalse(token.refresh_token_is_set)
        self.assertIn("Disconnected by", token.connection_message)
