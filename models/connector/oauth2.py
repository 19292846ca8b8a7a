import logging
import time
from contextlib import contextmanager
from urllib.parse import quote_plus

import requests

from odoo import api, fields, models

from ...const import JWT_BEARER_GRANT, LOCK_OAUTH2_REFRESH, MANAGER_GROUP
from ...core.exceptions import (
    RETRYABLE_STATUSES,
    IntegrationAuthError,
    IntegrationConfigError,
    IntegrationRateLimitedError,
    IntegrationReconnectNeededError,
    UnsafeURLError,
)
from ...core.redact import redact_text, redact_url
from ..integration_connector_state import state_cursor
from ..integration_secret_mixin import secret_fields
from .call import _get_session

_logger = logging.getLogger(__name__)

# Token request parameters that are credentials (RFC 6749, 7523, 7636).
_TOKEN_REQUEST_SECRETS = ("code", "code_verifier", "refresh_token", "assertion", "client_assertion", "client_secret")


class IntegrationConnector(models.Model):
    """OAuth2: access tokens cached in ``integration.oauth.token``, shared by every worker.

    A grant is a selection value of ``oauth2_grant_type`` and a method
    ``_oauth2_token_request_<grant>(current_token)`` returning the token request's form
    data and client authentication; ``_oauth2_access_token`` does the caching, the
    refresh (one worker at a time) and the storing.

    Grants here: client credentials; authorization code, whose token requests are the
    refresh grant once a manager has connected (Connect and the callback: ``oauth2_connect``);
    JWT bearer (RFC 7523), an assertion signed by ``jwt`` exchanged for an access token.
    """

    _inherit = "integration.connector"

    oauth2_grant_type = fields.Selection(
        selection=[
            ("client_credentials", "Client Credentials"),
            ("authorization_code", "Authorization Code (PKCE)"),
            ("jwt_bearer", "JWT Bearer Assertion (RFC 7523)"),
        ],
        string="OAuth2 Grant",
        default="client_credentials",
    )
    oauth2_token_url = fields.Char(string="Token URL")
    oauth2_client_id = fields.Char(string="Client ID", groups=MANAGER_GROUP)
    oauth2_client_secret, oauth2_client_secret_encrypted, oauth2_client_secret_is_set = secret_fields("Client Secret")
    oauth2_scope = fields.Char(string="Scope", help="Space-separated scopes, when the server wants them.")
    oauth2_audience = fields.Char(string="Audience", help="Sent as 'audience' when the server needs one.")
    oauth2_client_auth = fields.Selection(
        selection=[("basic", "HTTP Basic (client_secret_basic)"), ("body", "Request body (client_secret_post)")],
        string="Client Authentication",
        default="basic",
    )
    oauth2_token_ids = fields.One2many("integration.oauth.token", "connector_id", string="OAuth2 Tokens")

    @api.constrains("oauth2_token_url")
    def _check_oauth2_token_url(self):
        for connector in self.filtered("oauth2_token_url"):
            connector._validate_http_url(connector.oauth2_token_url, connector._fields["oauth2_token_url"].string)

    @api.model_create_multi
    def create(self, vals_list):
        connectors = super().create(vals_list)
        self.env["integration.oauth.token"].sudo().create([{"connector_id": c.id} for c in connectors])
        return connectors

    def _known_secret_values(self):
        values = super()._known_secret_values()
        if self.auth_type == "oauth2":
            # Through the token's own cursor: ours may predate the token now in use.
            with self._oauth2_token_env() as env:
                token = env["integration.oauth.token"].search([("connector_id", "=", self.id)], limit=1)
                for name in ("access_token", "refresh_token"):
                    if token[f"{name}_encrypted"]:
                        values.append(token._get_secret(name))
        return values

    def _auth_apply_oauth2(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._oauth2_access_token()}"

    def _oauth2_access_token(self):
        """The cached access token, fetched (by one worker at a time) when missing or due.

        Read and stored through a cursor of its own, committed at once: a token outlives
        the job that fetched it even when that job rolls back, and the caller's transaction
        never locks the token row. Refreshes are serialized with an advisory lock taken
        before the reading transaction starts, so a waiting worker sees the token the first
        one stored instead of fetching another.
        """
        with self._oauth2_token_env() as env:
            token = env["integration.oauth.token"]._for_connector(self)
            if token._is_usable():
                return token._get_secret("access_token")
        with self._oauth2_token_lock():
            try:
                with self._oauth2_token_env() as env:
                    Token = env["integration.oauth.token"]
                    token = Token._for_connector(self)
                    if token._is_usable():
                        return token._get_secret("access_token")
                    payload = self.with_env(env)._oauth2_fetch_token(token)
                    return Token._store(self, payload)._get_secret("access_token")
            except IntegrationReconnectNeededError as exc:
                if exc.refused:
                    # Still under the lock: a Connect cannot store new tokens in between.
                    self._oauth2_reconnect_needed(str(exc))
                raise

    @contextmanager
    def _oauth2_token_lock(self):
        """Hold the connector's token lock: one worker at a time fetches or replaces tokens.

        Taken before the token's reading transaction starts, so that a worker that waited
        sees what the previous holder stored.
        """
        with state_cursor(self.env.cr.dbname) as lock_cr:
            # Wait for another worker's refresh at most as long as one refresh may take.
            deadline = time.monotonic() + self.timeout_connect + self.timeout_read + 5
            while True:
                lock_cr.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_OAUTH2_REFRESH, self.id])
                if lock_cr.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise IntegrationRateLimitedError(
                        self.env._("Connector %s: another worker is fetching an OAuth2 token.", self.code),
                        retry_in=5.0,
                    )
                time.sleep(0.05)
            try:
                yield
            finally:
                lock_cr.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_OAUTH2_REFRESH, self.id])

    @contextmanager
    def _oauth2_token_env(self):
        """A superuser environment on a fresh cursor, or on ours while this connector is
        not committed yet (created in this very transaction: invisible to other cursors)."""
        # What this transaction changed on the connector or its token, visible there too.
        self.flush_recordset()
        self.env["integration.oauth.token"].flush_model()
        with self.env.registry.cursor() as cr:
            env = self.env(cr=cr, su=True)
            if env["integration.connector"].browse(self.id).exists():
                yield env
                return
        yield self.env(su=True)

    def _oauth2_invalidate_token(self, rejected_token):
        """Forget the access token the API refused (not one another worker stored since)."""
        with self._oauth2_token_env() as env:
            token = env["integration.oauth.token"]._for_connector(self)
            if token.access_token_encrypted and token._get_secret("access_token") == rejected_token:
                token._clear_access()

    def _oauth2_fetch_token(self, current_token):
        """Ask the authorization server for a token; dispatched on the grant type.

        :param current_token: the stored ``integration.oauth.token`` (maybe empty), for
            grants that refresh with a refresh token
        :return: the token endpoint's JSON answer (``access_token``, ``expires_in``...)
        """
        method = getattr(self, f"_oauth2_token_request_{self.oauth2_grant_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("OAuth2 grant %s is not supported.", self.oauth2_grant_type))
        data, auth = method(current_token)
        try:
            return self._oauth2_post_token_request(data, auth)
        except IntegrationAuthError as exc:
            if data.get("grant_type") != "refresh_token" or exc.oauth2_error != "invalid_grant":
                raise
            # RFC 6749 5.2: the refresh token is expired, revoked or rotated away; only a new
            # authorization helps (other refusals are configuration: the grant is kept).
            raise IntegrationReconnectNeededError(
                self.env._(
                    "Connector %(code)s needs to be reconnected: the provider refused its refresh token "
                    "(%(reason)s). A manager must press Connect on the connector.",
                    code=self.code,
                    reason=exc,
                ),
                refused=True,
            ) from None

    def _oauth2_token_request_client_credentials(self, current_token):
        data = {"grant_type": "client_credentials"}
        if self.oauth2_scope:
            data["scope"] = self.oauth2_scope
        if self.oauth2_audience:
            data["audience"] = self.oauth2_audience
        return self._oauth2_client_authentication(data)

    def _oauth2_token_request_authorization_code(self, current_token):
        """The refresh grant: the authorization code itself is exchanged by the callback."""
        refresh_token = current_token._get_secret("refresh_token") if current_token else None
        if not refresh_token:
            state = current_token.connection_state if current_token else "disconnected"
            raise IntegrationReconnectNeededError(
                self.env._(
                    "Connector %(code)s is not connected to its OAuth2 provider%(why)s: a manager must press "
                    "Connect on the connector.",
                    code=self.code,
                    why=self.env._(" (its authorization was refused or revoked)") if state == "reconnect" else "",
                )
            )
        return self._oauth2_client_authentication(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, public_client=True
        )

    def _oauth2_token_request_jwt_bearer(self, current_token):
        """RFC 7523 2.1: a fresh assertion (see the ``jwt`` chapter) for an access token."""
        data = {"grant_type": JWT_BEARER_GRANT, "assertion": self._jwt_assertion(audience=self.oauth2_token_url)}
        if self.oauth2_scope:
            data["scope"] = self.oauth2_scope
        if not self.oauth2_client_secret_is_set:
            return data, None  # the assertion authenticates (RFC 7523 3.1: client auth optional)
        return self._oauth2_client_authentication(data)

    def _oauth2_client_authentication(self, data, public_client=False):
        """``(data, auth)`` with the client's credentials, per the Client Authentication setting.

        :param public_client: without a client secret, send the client ID alone in the body
            (a public client of the authorization code grant, protected by PKCE)
        """
        client_id = self.sudo().oauth2_client_id
        if not client_id:
            raise IntegrationConfigError(self.env._("Connector %s: the OAuth2 client ID is not set.", self.code))
        if public_client and not self.oauth2_client_secret_is_set:
            return dict(data, client_id=client_id), None
        secret = self._require_secret("oauth2_client_secret")
        if self.oauth2_client_auth == "body":
            return dict(data, client_id=client_id, client_secret=secret), None
        # RFC 6749 2.3.1: form-urlencode both before the Basic encoding.
        return data, requests.auth.HTTPBasicAuth(
            quote_plus(client_id, safe="").encode(), quote_plus(secret, safe="").encode()
        )

    def _oauth2_post_token_request(self, data, auth):
        url = self.oauth2_token_url
        self._check_outbound_url(url)
        session = _get_session(self.env.cr.dbname, self.id, self.allow_private_network, self.verify_tls)
        try:
            response = session.post(
                url,
                data=data,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=(self.timeout_connect, self.timeout_read),
                verify=self.verify_tls,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise self._connection_error("POST", url, exc) from None
        except UnsafeURLError as exc:
            raise IntegrationConfigError(
                self.env._("Connector %(code)s: token URL refused: %(reason)s", code=self.code, reason=exc)
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code in RETRYABLE_STATUSES:
            # The authorization server is down or throttling: try again later, like any call.
            raise self._http_error("POST", url, response)
        if response.status_code != 200 or not isinstance(payload, dict) or not payload.get("access_token"):
            # A provider may quote what it was sent (a code, a verifier, an assertion): never
            # into the log or the message.
            sent = [str(data[key]) for key in _TOKEN_REQUEST_SECRETS if data.get(key)]
            remote = oauth2_error = ""
            if isinstance(payload, dict) and payload.get("error"):
                oauth2_error = str(payload["error"])
                remote = ": ".join(str(payload[k]) for k in ("error", "error_description") if payload.get(k))
            error = IntegrationAuthError(
                self.env._(
                    "Connector %(code)s: the OAuth2 token request to %(url)s failed with HTTP %(status)s%(remote)s",
                    code=self.code,
                    url=redact_url(url),
                    status=response.status_code,
                    remote=f" ({redact_text(remote, self._known_secret_values() + sent)})" if remote else "",
                ),
                oauth2_error=oauth2_error or None,
            )
            _logger.warning("%s", error)
            raise error
        return payload
