import json
import logging
import re
import time

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError
from odoo.http import request
from odoo.tools import consteq
from odoo.tools.misc import hmac

from ...const import OAUTH2_CALLBACK_ROUTE, OAUTH2_CONNECT_ROUTE_PREFIX
from ...core.exceptions import IntegrationAuthError, IntegrationError
from ...core.pkce import authorization_url
from ..integration_oauth_token import AUTHORIZATION_TIMEOUT_MINUTES

_logger = logging.getLogger(__name__)

CONNECT_TOKEN_SCOPE = "integration_hub.oauth2_connect"
SESSION_BINDING_SCOPE = "integration_hub.oauth2_session"
# A Connect link works in the browser session that asked for it, for 10 to 20 minutes
# (the current and the previous window of this many seconds).
CONNECT_LINK_WINDOW = 600
# What of a provider's error text is shown back (it arrives through the browser).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class IntegrationConnector(models.Model):
    """OAuth2 authorization code grant with PKCE: Connect, the callback, Disconnect.

    *Connect* (managers) leads the browser through ``OAUTH2_CONNECT_ROUTE_PREFIX/<id>``,
    which binds a new authorization (``state``, PKCE verifier) to the session and redirects
    to the provider; the provider redirects back to ``OAUTH2_CALLBACK_ROUTE``, where
    ``_oauth2_authorization_callback`` checks ``state``, exchanges the code with the verifier
    and stores the tokens in the connector's ``integration.oauth.token``. From then on the
    ``authorization_code`` grant of the ``oauth2`` chapter refreshes them (a rotated refresh
    token is kept); when the provider refuses the refresh token the connector shows
    "reconnect needed" and its calls fail at once with ``IntegrationReconnectNeededError``.
    """

    _inherit = "integration.connector"

    oauth2_authorize_url = fields.Char(
        string="Authorization URL", help="The provider's authorization endpoint, where Connect sends the manager."
    )
    oauth2_authorize_params = fields.Char(
        string="Extra Authorization Parameters",
        help='JSON object added to the authorization URL, e.g. {"access_type": "offline", "prompt": "consent"} '
        "(Google's way to get a refresh token).",
    )
    oauth2_redirect_uri = fields.Char(
        string="Redirect URI",
        compute="_compute_oauth2_redirect_uri",
        help="Register this URI at the provider as the application's redirect (callback) URI.",
    )
    oauth2_connection_state = fields.Selection(
        [("disconnected", "Not Connected"), ("connected", "Connected"), ("reconnect", "Reconnect Needed")],
        string="Connection",
        compute="_compute_oauth2_connection",
    )
    oauth2_connection_message = fields.Char(string="Connection Result", compute="_compute_oauth2_connection")
    oauth2_connected_at = fields.Datetime(string="Connected Since", compute="_compute_oauth2_connection")

    def _compute_oauth2_redirect_uri(self):
        for connector in self:
            connector.oauth2_redirect_uri = connector._oauth2_redirect_uri()

    def _compute_oauth2_connection(self):
        # Tokens are written through cursors of their own: read, never cached on the connector.
        tokens = self.env["integration.oauth.token"].sudo().search([("connector_id", "in", self.ids)])
        by_connector = {token.connector_id.id: token for token in tokens}
        for connector in self:
            token = by_connector.get(connector.id)
            connector.oauth2_connection_state = token.connection_state if token else "disconnected"
            connector.oauth2_connection_message = token.connection_message if token else False
            connector.oauth2_connected_at = token.connected_at if token else False

    @api.constrains("auth_type", "oauth2_grant_type", "oauth2_authorize_url", "oauth2_authorize_params")
    def _check_oauth2_authorization_settings(self):
        for connector in self:
            if connector.oauth2_authorize_url:
                connector._validate_http_url(
                    connector.oauth2_authorize_url, connector._fields["oauth2_authorize_url"].string
                )
            connector._oauth2_authorize_extra_params()

    # Actions

    def action_oauth2_connect(self):
        """Button (managers): go to the provider's consent page, come back connected."""
        self.ensure_one()
        self.check_access("write")
        self._oauth2_check_connect_settings()
        return {
            "type": "ir.actions.act_url",
            "url": f"{OAUTH2_CONNECT_ROUTE_PREFIX}/{self.id}"
            f"?token={self._oauth2_connect_token(self._oauth2_session_binding())}",
            "target": "self",
        }

    def action_oauth2_disconnect(self):
        """Button (managers): forget the tokens (the provider's grant stays until revoked there)."""
        self.check_access("write")
        message = self.env._("Disconnected by %s.", self.env.user.name)
        for connector in self:
            with connector._oauth2_token_lock(), connector._oauth2_token_env() as env:
                token = env["integration.oauth.token"]._for_connector(connector)
                token._clear(message=message)
                token.write(token._pending_cleared())
            connector._message_log(body=self.env._("OAuth2 connection forgotten by %s.", self.env.user.name))
        return True

    # Connect -> provider -> callback

    def _oauth2_redirect_uri(self):
        return f"{self.get_base_url().rstrip('/')}{OAUTH2_CALLBACK_ROUTE}"

    @api.model
    def _oauth2_session_binding(self):
        """What ties a Connect link and an authorization to this browser session, without
        storing the session id (empty outside a request: such a link never validates)."""
        if not request or not request.session.sid:
            return ""
        return hmac(self.env(su=True), SESSION_BINDING_SCOPE, request.session.sid)

    def _oauth2_connect_token(self, session_binding, window=None):
        """What the Connect link carries: proof that this user's Connect, in this browser
        session, made the link lately (it may sit in a proxy log or the browser history)."""
        window = int(time.time() // CONNECT_LINK_WINDOW) if window is None else window
        digest = hmac(self.env(su=True), CONNECT_TOKEN_SCOPE, (self.id, self.env.uid, session_binding, window))
        return f"{window}.{digest}"

    def _oauth2_connect_token_valid(self, token, session_binding):
        window, _dot, _digest = (token or "").partition(".")
        if not session_binding or not window.isdigit():
            return False
        now = int(time.time() // CONNECT_LINK_WINDOW)
        if int(window) not in (now, now - 1):
            return False
        return consteq(token, self._oauth2_connect_token(session_binding, int(window)))

    def _oauth2_authorize_extra_params(self):
        text = (self.oauth2_authorize_params or "").strip()
        if not text:
            return {}
        try:
            params = json.loads(text)
        except ValueError:
            params = None
        if not isinstance(params, dict) or not all(isinstance(v, str | int) for v in params.values()):
            raise ValidationError(
                self.env._(
                    'Extra Authorization Parameters must be a JSON object of text values, e.g. {"prompt": "consent"}.'
                )
            )
        return params

    def _oauth2_check_connect_settings(self):
        self.ensure_one()
        if self.auth_type != "oauth2" or self.oauth2_grant_type != "authorization_code":
            raise UserError(self.env._("Connect is for OAuth2 connectors with the authorization code grant."))
        missing = [
            self._fields[name].string
            for name in ("oauth2_authorize_url", "oauth2_token_url", "oauth2_client_id")
            if not self.sudo()[name]
        ]
        if missing:
            raise UserError(self.env._("Set these before connecting: %s.", ", ".join(missing)))

    def _oauth2_authorization_begin(self, session_binding):
        """Start an authorization for the current user; returns the provider's URL to go to."""
        self.ensure_one()
        self.check_access("write")
        self._oauth2_check_connect_settings()
        with self._oauth2_token_env() as env:
            token = env["integration.oauth.token"]._for_connector(self)
            state, challenge = token._authorization_begin(self.env.user, session_binding)
        return authorization_url(
            self.oauth2_authorize_url,
            self.sudo().oauth2_client_id,
            self._oauth2_redirect_uri(),
            state,
            challenge,
            scope=self.oauth2_scope,
            extra_params=self._oauth2_authorize_extra_params(),
        )

    @api.model
    def _oauth2_authorization_callback(self, session_binding, state, code=None, error=None, error_description=None):
        """Finish an authorization from the provider's redirect; returns the connector.

        The outcome (connected, consent denied, code refused, too late) is stored on the
        connector's token for its form to show.

        :raises OAuth2StateError: ``state`` matches no Connect of this user and session (forged,
            used, or from another browser): nothing is changed
        """
        pending = self.env["integration.oauth.token"].sudo()._authorization_pending(state)
        pending._authorization_check(self.env.user, session_binding)
        connector = self.browse(pending.connector_id.id)
        connector.check_access("write")
        with connector._oauth2_token_env() as env:
            verifier = env["integration.oauth.token"].browse(pending.id)._authorization_consume(state)
        if verifier is None:
            message = self.env._(
                "The authorization was not completed within %s minutes and has been dropped: press Connect again.",
                AUTHORIZATION_TIMEOUT_MINUTES,
            )
        elif error or not code:
            reason = _CONTROL.sub(" ", ": ".join(filter(None, [error, error_description])))[:300]
            message = self.env._(
                "The provider did not grant access (%s). Press Connect to try again.",
                reason or self.env._("no authorization code"),
            )
        else:
            message = connector._oauth2_exchange_code(code, verifier)
        if message:
            connector._oauth2_set_connection_message(message)
        return connector

    def _oauth2_exchange_code(self, code, verifier):
        """Trade the code and verifier for tokens; returns a failure message, or None."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._oauth2_redirect_uri(),
            "code_verifier": verifier,
        }
        try:
            data, auth = self._oauth2_client_authentication(data, public_client=True)
            with self._oauth2_token_lock(), self._oauth2_token_env() as env:
                payload = self.with_env(env)._oauth2_post_token_request(data, auth)
                token = env["integration.oauth.token"]._store(self, payload)
                token._set_connection("connected", self.env._("Connected by %s.", self.env.user.name))
        except IntegrationError as exc:
            reason = str(exc)  # the token request masks what it sent (code, verifier)
            if isinstance(exc, IntegrationAuthError) and exc.oauth2_error == "invalid_grant":
                return self.env._(
                    "The provider refused the authorization code (expired or already used): %s. "
                    "Press Connect to try again.",
                    reason,
                )
            return self.env._("Connecting failed: %s. Press Connect to try again.", reason)
        self._message_log(body=self.env._("Connected to the OAuth2 provider by %s.", self.env.user.name))
        return None

    def _oauth2_set_connection_message(self, message):
        with self._oauth2_token_env() as env:
            env["integration.oauth.token"]._for_connector(self).write({"connection_message": message})

    def _oauth2_reconnect_needed(self, message):
        """The provider refused the refresh token: forget the tokens, say so on the form and
        in the chatter (committed now, whatever happens to the caller's transaction)."""
        _logger.warning("%s", message)
        with self._oauth2_token_env() as env:
            env["integration.oauth.token"]._for_connector(self)._clear(connection_state="reconnect", message=message)
            self.with_env(env)._message_log(body=message)
