import base64

import requests

from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...const import MANAGER_GROUP
from ...core.actions import notification
from ...core.exceptions import IntegrationConfigError
from ...core.redact import redact_text, register_sensitive_name
from ..integration_secret_mixin import secret_fields


class IntegrationConnector(models.Model):
    """Authentication: the type, its settings and write-only secrets, and redaction.

    ``_auth_apply_<auth_type>(kwargs)`` edits an outgoing request (headers, query
    parameters, ``auth``); an addon adds a type with a selection value and that method.
    ``_known_secret_values`` lists every clear secret the connector holds, so that error
    messages, logs and excerpts are scrubbed of them: extend it for new secrets.
    """

    _inherit = "integration.connector"

    # Authentication
    auth_type = fields.Selection(
        selection=[
            ("none", "None"),
            ("api_key", "API Key"),
            ("bearer", "Bearer Token"),
            ("basic", "HTTP Basic"),
            ("oauth2", "OAuth2"),
            ("jwt", "JWT Bearer (signed assertion)"),
            ("api_key_pair", "API Key + Secret"),
        ],
        string="Authentication",
        required=True,
        default="none",
        tracking=True,
    )
    api_key_location = fields.Selection(
        selection=[("header", "Header"), ("query", "Query Parameter")],
        default="header",
        string="API Key In",
    )
    api_key_name = fields.Char(
        string="API Key Header/Parameter", default="X-API-Key", help="Header or query parameter name carrying the key."
    )
    api_key, api_key_encrypted, api_key_is_set = secret_fields("API Key")
    # API key + secret: two headers, the key's named by api_key_name.
    api_secret_name = fields.Char(
        string="API Secret Header",
        default="X-API-Secret",
        help="Header carrying the secret of an API key + secret pair.",
    )
    api_secret, api_secret_encrypted, api_secret_is_set = secret_fields("API Secret")
    bearer_token, bearer_token_encrypted, bearer_token_is_set = secret_fields("Bearer Token")
    basic_username = fields.Char(string="Username", groups=MANAGER_GROUP)
    basic_password, basic_password_encrypted, basic_password_is_set = secret_fields("Password")

    @api.constrains("auth_type", "api_key_name", "api_secret_name", "oauth2_token_url")
    def _check_auth_settings(self):
        for connector in self:
            if connector.auth_type in ("api_key", "api_key_pair") and not (connector.api_key_name or "").strip():
                raise ValidationError(self.env._("API Key Header/Parameter is required for API key authentication."))
            if connector.auth_type == "api_key_pair":
                secret_name = (connector.api_secret_name or "").strip()
                if not secret_name or secret_name.lower() == connector.api_key_name.strip().lower():
                    raise ValidationError(
                        self.env._("API Secret Header is required, and must differ from the API key's header.")
                    )
            if connector.auth_type == "oauth2" and not connector.oauth2_token_url:
                raise ValidationError(self.env._("Token URL is required for OAuth2 authentication."))

    def action_rotate_secrets(self):
        """Button (managers): re-encrypt every connector secret with the current key."""
        self.check_access("write")
        count = self._rotate_secrets()
        count += self.env["integration.oauth.token"].sudo().search([("connector_id", "in", self.ids)])._rotate_secrets()
        return notification(
            self.env._("Secrets re-encrypted"),
            self.env._("%s secret(s) re-encrypted with the current key.", count),
            reload=False,
        )

    # Authentication, dispatched on auth_type: _auth_apply_<type>(kwargs) edits the request.

    def _auth_apply(self, kwargs):
        method = getattr(self, f"_auth_apply_{self.auth_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("Authentication type %s is not supported.", self.auth_type))
        method(kwargs)

    def _auth_apply_none(self, kwargs):
        return

    def _auth_apply_api_key(self, kwargs):
        key = self._require_secret("api_key")
        name = self.api_key_name.strip()
        if self.api_key_location == "query":
            kwargs["params"].append((name, key))
        else:
            kwargs["headers"][name] = key

    def _auth_apply_bearer(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._require_secret('bearer_token')}"

    def _auth_apply_api_key_pair(self, kwargs):
        kwargs["headers"][self.api_key_name.strip()] = self._require_secret("api_key")
        kwargs["headers"][self.api_secret_name.strip()] = self._require_secret("api_secret")

    def _auth_apply_basic(self, kwargs):
        username = self.sudo().basic_username
        if not username:
            raise IntegrationConfigError(self.env._("Connector %s: the username for HTTP basic is not set.", self.code))
        # UTF-8, as RFC 7617 recommends (requests would encode text as Latin-1).
        password = self._require_secret("basic_password")
        kwargs["auth"] = requests.auth.HTTPBasicAuth(username.encode(), password.encode())

    def _auth_invalidate(self, response):
        """The API answered 401 to credentials that may have gone stale: drop them.

        :return: True when a second try, with fresh credentials, may succeed (``_request``
            then retries once); False for credentials that would be sent unchanged
        """
        sent = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.auth_type == "oauth2":
            self._oauth2_invalidate_token(sent)
            return True
        if self.auth_type == "jwt" and self.jwt_reuse:
            self._jwt_forget_assertion()
            return True
        return False

    def _require_secret(self, name):
        value = self._get_secret(name)
        if not value:
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: the %(secret)s is not set.", code=self.code, secret=self._fields[name].string
                )
            )
        return value

    def _sensitive_param_names(self):
        """Header and parameter names this connector's credentials travel in, whatever they
        look like (a pair's header may be called "X-Client")."""
        names = []
        if self.auth_type in ("api_key", "api_key_pair") and self.api_key_name:
            names.append(self.api_key_name.strip())
        if self.auth_type == "api_key_pair" and self.api_secret_name:
            names.append(self.api_secret_name.strip())
        for name in names:
            # Also masked in the debug lines urllib3 writes for this process.
            register_sensitive_name(name)
        return names

    def _known_secret_values(self):
        """Every decrypted secret of this connector, to scrub from messages."""
        values = []
        for name in self._secret_field_names():
            if self.sudo()[f"{name}_encrypted"]:
                values.append(self._get_secret(name))
        if self.sudo().basic_password_encrypted and self.sudo().basic_username:
            # The form it travels in, should a remote echo the Authorization header back.
            credentials = f"{self.sudo().basic_username}:{self._get_secret('basic_password')}"
            values.append(base64.b64encode(credentials.encode()).decode())
        return values

    def _redact(self, text, limit=None):
        return redact_text(text, self._known_secret_values(), limit=limit)
