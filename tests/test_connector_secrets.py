"""Secrets: encrypted at rest, write-only, rotated, and never in logs or messages."""

import base64
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from ..core.exceptions import IntegrationError
from .common import KEY_A, KEY_B, IntegrationHubCase, Reply, capture_logs, encryption_keys

# Not URL-safe on purpose: they must be masked in their encoded forms too.
SECRET_VALUES = {
    "api_key": "ak+Secret/0001=x%",
    "bearer_token": "bt-Secret-0002",
    "basic_password": "pw Secret:0003&",
    "oauth2_client_secret": "cs+Secret/0004=%2F",
}


@tagged("post_install", "-at_install")
class TestConnectorSecrets(IntegrationHubCase):
    def _raw(self, connector, column):
        self.env.flush_all()
        self.env.cr.execute(f"SELECT {column} FROM integration_connector WHERE id = %s", [connector.id])  # noqa: S608
        return self.env.cr.fetchone()[0]

    def test_ciphertext_at_rest(self):
        connector = self._create_connector(auth_type="api_key", **{k: v for k, v in SECRET_VALUES.items()})
        self.env.cr.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'integration_connector'"
        )
        columns = {row[0] for row in self.env.cr.fetchall()}
        for name, value in SECRET_VALUES.items():
            self.assertNotIn(name, columns, "the input field is not stored")
            ciphertext = self._raw(connector, f"{name}_encrypted")
            self.assertTrue(ciphertext.startswith("gAAAAA"), "a Fernet token")
            self.assertNotIn(value, ciphertext)
            self.assertEqual(Fernet(KEY_A).decrypt(ciphertext.encode()).decode(), value)
        self.env.cr.execute("SELECT row_to_json(c)::text FROM integration_connector c WHERE id = %s", [connector.id])
        whole_row = self.env.cr.fetchone()[0]
        for value in SECRET_VALUES.values():
            self.assertNotIn(value, whole_row)

    def test_never_read_back(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-readback")
        connector.invalidate_recordset()
        self.assertFalse(connector.bearer_token)
        self.assertTrue(connector.bearer_token_is_set)
        self.assertFalse(connector.api_key_is_set)
        values = connector.read(["bearer_token", "bearer_token_is_set"])[0]
        self.assertFalse(values["bearer_token"])
        self.assertTrue(values["bearer_token_is_set"])
        self.assertNotIn("bt-readback", str(connector.with_user(self.manager).web_read({"bearer_token": {}})))

    def test_other_fields_written_keep_secret_and_clear_removes_it(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-keep-me")
        connector.write({"name": "Renamed"})
        self.assertEqual(connector._get_secret("bearer_token"), "bt-keep-me")
        connector.with_context(secret_field="bearer_token").action_clear_secret()
        self.assertFalse(connector.bearer_token_is_set)
        self.assertIsNone(connector._get_secret("bearer_token"))

    def test_writing_false_over_rpc_clears_the_secret(self):
        # A provisioning script's write of False (or "") means "no secret", as Clear does.
        connector = self._create_connector(auth_type="api_key", api_key="ak-to-clear", bearer_token="bt-to-clear")
        connector.with_user(self.manager).write({"api_key": False, "bearer_token": "", "name": "Provisioned"})
        connector.invalidate_recordset()
        self.assertFalse(connector.api_key_is_set)
        self.assertFalse(connector.bearer_token_is_set)
        self.assertIsNone(connector._get_secret("api_key"))
        self.assertEqual(connector.name, "Provisioned")
        self.assertIsNone(self._raw(connector, "api_key_encrypted"))
        note = connector.message_ids[:1].body
        self.assertIn("API Key, Bearer Token cleared", note)
        self.assertNotIn("to-clear", str(connector.message_ids.mapped("body")))
        # A number is a value, not "no secret" (scripts send what their data holds).
        connector.with_user(self.manager).write({"api_key": 123456})
        self.assertEqual(connector._get_secret("api_key"), "123456")
        # Operators still cannot touch secrets, not even to clear them.
        connector.write({"api_key": "ak-again"})
        with self.assertRaises(AccessError):
            connector.with_user(self.operator).write({"api_key": False})
        self.assertEqual(connector._get_secret("api_key"), "ak-again")

    def test_rotated_key_list(self):
        connector = self._create_connector(auth_type="api_key", api_key="ak-rotate-me")
        old_ciphertext = self._raw(connector, "api_key_encrypted")
        with encryption_keys(f"{KEY_B},{KEY_A}"):
            connector._request("GET", "/a")
            self.assertEqual(self.server.received[-1].headers["X-API-Key"], "ak-rotate-me")
            connector.action_rotate_secrets()
        new_ciphertext = self._raw(connector, "api_key_encrypted")
        self.assertNotEqual(new_ciphertext, old_ciphertext)
        with encryption_keys(KEY_B):
            connector._request("GET", "/b")
            self.assertEqual(self.server.received[-1].headers["X-API-Key"], "ak-rotate-me")
        with encryption_keys(KEY_A), self.assertRaisesRegex(UserError, "cannot be decrypted"):
            connector._request("GET", "/c")
        self.assertEqual(len(self.server.received), 2)

    def test_no_key_configured(self):
        Connector = self.env["integration.connector"]
        count = Connector.search_count([])
        with encryption_keys(""):
            with self.assertRaisesRegex(UserError, "no encryption key is configured.*integration_hub_encryption_keys"):
                self._create_connector(auth_type="bearer", bearer_token="bt-no-key")
            self.assertEqual(Connector.search_count([]), count, "nothing stored")
            connector = self._create_connector(auth_type="none")
            with self.assertRaisesRegex(UserError, "INTEGRATION_HUB_ENCRYPTION_KEYS"):
                connector.write({"api_key": "ak-no-key"})
        self.assertFalse(self._raw(connector, "api_key_encrypted"))

    def test_invalid_key_not_echoed(self):
        with encryption_keys("this-is-not-a-valid-key"), self.assertRaises(UserError) as caught:
            self._create_connector(auth_type="bearer", bearer_token="bt-bad-key")
        self.assertIn("not a valid Fernet key", str(caught.exception))
        self.assertNotIn("this-is-not-a-valid-key", str(caught.exception))

    def test_pasted_secret_is_trimmed(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="  bt-pasted-1\n")
        self.assertEqual(connector._get_secret("bearer_token"), "bt-pasted-1")

    def test_operator_cannot_clear_or_rotate_over_rpc(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-keep-it")
        as_operator = connector.with_user(self.operator)
        with self.assertRaises(AccessError):
            as_operator.with_context(secret_field="bearer_token").action_clear_secret()
        with self.assertRaises(AccessError):
            as_operator.action_rotate_secrets()
        self.assertEqual(connector._get_secret("bearer_token"), "bt-keep-it")

    def test_change_is_audited_without_value(self):
        connector = self._create_connector(auth_type="bearer")
        connector.write({"bearer_token": "bt-audited-value"})
        bodies = " ".join(connector.message_ids.mapped("body"))
        self.assertIn("Bearer Token replaced", bodies)
        self.assertNotIn("bt-audited-value", bodies)

    def test_non_manager_cannot_read_secrets(self):
        connector = self._create_connector(auth_type="api_key", api_key="ak-hidden-from-users")
        as_operator = connector.with_user(self.operator)
        values = as_operator.read()[0]
        self.assertEqual(values["name"], "Test API")
        for name in SECRET_VALUES:
            self.assertNotIn(name, values)
            self.assertNotIn(f"{name}_encrypted", values)
        self.assertTrue(values["api_key_is_set"])
        self.assertNotIn("ak-hidden-from-users", str(values))
        with self.assertRaises(AccessError):
            as_operator.read(["api_key_encrypted"])
        with self.assertRaises(AccessError):
            as_operator.search_read([], ["api_key"])
        with self.assertRaises(AccessError):
            as_operator.write({"api_key": "ak-from-operator"})

    def test_secrets_absent_from_logs_errors_and_chatter(self):
        # Everything this addon and the HTTP stack say, down to DEBUG.
        handler = capture_logs(self)

        def echoing(request):
            # A careless remote that echoes credentials back in its error body.
            if request.path == "/oauth/token":
                return Reply(400, {"error": "invalid_grant", "error_description": request.body.decode()})
            return Reply(500, {"echo": dict(request.headers), "query": request.query})

        self.server.respond_with(echoing)
        connectors = [
            # A parameter name that looks like nothing secret: masked because it is configured.
            self._create_connector(
                auth_type="api_key", api_key_location="query", api_key_name="x", api_key=SECRET_VALUES["api_key"]
            ),
            self._create_connector(auth_type="bearer", bearer_token=SECRET_VALUES["bearer_token"]),
            self._create_connector(
                auth_type="basic", basic_username="u", basic_password=SECRET_VALUES["basic_password"]
            ),
            self._create_connector(
                auth_type="oauth2",
                oauth2_client_auth="body",
                oauth2_token_url=self.server.url + "/oauth/token",
                oauth2_client_id="cid",
                oauth2_client_secret=SECRET_VALUES["oauth2_client_secret"],
            ),
        ]
        messages = []
        for connector in connectors:
            with self.assertRaises(IntegrationError) as caught:
                connector._request("GET", "/orders")
            messages.append(str(caught.exception))
            connector.action_test_connection()
            messages.append(connector.last_test_message)
        self.assertEqual(len(self.server.received), 8, "every call reached the server")
        self.assertTrue(any("HTTP 500" in m for m in messages))
        chatter = " ".join(b for c in connectors for b in c.message_ids.mapped("body"))
        logged = "\n".join(handler.lines)
        self.assertIn("odoo.addons.integration_hub", logged, "the capture saw this addon's log lines")
        self.assertIn("urllib3.connectionpool DEBUG", logged, "and the HTTP stack's request lines")
        self.assertIn("x=***", logged, "the query-string key is masked in urllib3's line")
        # Basic credentials travel base64-encoded: look for that form too.
        basic = base64.b64encode(f"u:{SECRET_VALUES['basic_password']}".encode()).decode()
        encoded = [quote(v, safe="") for v in SECRET_VALUES.values()] + [quote_plus(v) for v in SECRET_VALUES.values()]
        for value in [*SECRET_VALUES.values(), basic, *encoded]:
            for where, text in (("log", logged), ("error", "\n".join(messages)), ("chatter", chatter)):
                self.assertNotIn(value, text, f"secret found in {where}")
