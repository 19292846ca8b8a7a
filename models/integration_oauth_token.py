from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import AccessError
from odoo.tools import consteq

from ..const import MANAGER_GROUP
from ..core.exceptions import OAuth2StateError
from ..core.pkce import code_challenge, make_state, make_verifier, state_hash
from .integration_secret_mixin import secret_fields

# Refresh this long before the announced expiry (or half the lifetime of short tokens),
# so that a token is never sent in the last seconds of its life.
REFRESH_MARGIN_SECONDS = 60
# How long a manager has, from Connect, to come back from the provider's consent page.
AUTHORIZATION_TIMEOUT_MINUTES = 10


class IntegrationOauthToken(models.Model):
    """The OAuth2 access token of a connector, cached in the database.

    Kept apart from the connector so that refreshing a token does not write (and lock)
    the connector's configuration row, and so that every worker and server on the
    database reuses one token. ``refresh_token`` is there for grants that have one
    (authorization code); client credentials leave it empty.

    For the authorization code grant the row also holds the authorization in progress
    (``pending_*``: the hash of ``state``, the encrypted PKCE verifier, who started it,
    from which session, until when; used once, then cleared) and the connection's state
    as the connector form shows it (connected, reconnect needed, and why).
    """

    _name = "integration.oauth.token"
    _description = "Integration OAuth2 Token"
    _inherit = ["integration.secret.mixin"]
    _order = "connector_id"
    _rec_name = "connector_id"

    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True)
    access_token, access_token_encrypted, access_token_is_set = secret_fields("Access Token")
    refresh_token, refresh_token_encrypted, refresh_token_is_set = secret_fields("Refresh Token")
    token_type = fields.Char(readonly=True)
    scope = fields.Char(readonly=True)
    obtained_at = fields.Datetime(readonly=True)
    expires_at = fields.Datetime(readonly=True, help="Empty when the server did not say (used until refused).")
    refresh_after = fields.Datetime(readonly=True)
    # Authorization code grant: the connection as the manager sees it.
    connection_state = fields.Selection(
        [("disconnected", "Not Connected"), ("connected", "Connected"), ("reconnect", "Reconnect Needed")],
        default="disconnected",
        required=True,
        readonly=True,
    )
    connection_message = fields.Char(readonly=True, help="The outcome of the last Connect, refresh or Disconnect.")
    connected_at = fields.Datetime(readonly=True)
    # The authorization in progress (between Connect and the provider's redirect back).
    pending_state_hash = fields.Char(readonly=True, index="btree_not_null", copy=False)
    pending_verifier, pending_verifier_encrypted, pending_verifier_is_set = secret_fields("PKCE Verifier")
    pending_user_id = fields.Many2one("res.users", readonly=True, ondelete="set null")
    pending_session_hash = fields.Char(readonly=True, copy=False)
    pending_expires_at = fields.Datetime(readonly=True)

    _sql_constraints = [
        ("connector_uniq", "unique(connector_id)", "A connector has one cached OAuth2 token."),
    ]

    @api.model
    def _for_connector(self, connector):
        """The connector's token row, made if missing.

        Every connector gets its row when it is created, so that two workers refreshing
        at once update one row (the loser gets a serialization failure and is retried by
        Odoo or queue_job) instead of racing to insert two.
        """
        return self.search([("connector_id", "=", connector.id)], limit=1) or self.create(
            {"connector_id": connector.id}
        )

    def _clear_access(self):
        """Drop the access token only; a refresh token, when there is one, stays."""
        self.write({"access_token_encrypted": False, "obtained_at": False, "expires_at": False, "refresh_after": False})

    def _clear(self, connection_state="disconnected", message=False):
        """Drop access and refresh tokens (an authorization in progress stays)."""
        self.write(
            {
                "access_token_encrypted": False,
                "refresh_token_encrypted": False,
                "token_type": False,
                "scope": False,
                "obtained_at": False,
                "expires_at": False,
                "refresh_after": False,
                "connection_state": connection_state,
                "connection_message": message,
                "connected_at": False,
            }
        )

    def action_forget(self):
        """Button (managers): drop the cached token; the next call fetches a new one
        (an authorization-code connector needs Connect again)."""
        self.check_access("read")
        if not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Only integration managers can forget OAuth2 tokens."))
        self.sudo()._clear(message=self.env._("Tokens forgotten by %s.", self.env.user.name))
        return True

    # Authorization code grant: Connect -> provider -> callback.

    def _authorization_begin(self, user, session_binding):
        """Start an authorization for ``user`` in the session ``session_binding`` names.

        Replaces one in progress (one at a time per connector: the newest Connect wins).
        :return: ``(state, code_challenge)`` for the authorization URL; only their hash
            and the encrypted verifier are kept
        """
        self.ensure_one()
        state, verifier = make_state(), make_verifier()
        self.write(
            {
                "pending_state_hash": state_hash(state),
                "pending_user_id": user.id,
                "pending_session_hash": session_binding,
                "pending_expires_at": fields.Datetime.now() + timedelta(minutes=AUTHORIZATION_TIMEOUT_MINUTES),
            }
        )
        self._set_secret("pending_verifier", verifier)
        return state, code_challenge(verifier)

    @api.model
    def _authorization_pending(self, state):
        """The row waiting for ``state``; OAuth2StateError when none is."""
        token = self.search([("pending_state_hash", "=", state_hash(state))], limit=1) if state else self.browse()
        if not token:
            raise OAuth2StateError(
                self.env._(
                    "This authorization answer does not match any Connect in progress (unknown or already used "
                    "state). Open the connector and press Connect again."
                )
            )
        return token

    def _authorization_check(self, user, session_binding):
        """Refuse an answer brought back by another user or browser session than the one
        that pressed Connect (a forged or stolen redirect); the pending authorization stays."""
        self.ensure_one()
        if self.pending_user_id != user or not consteq(self.pending_session_hash or "", session_binding or ""):
            raise OAuth2StateError(
                self.env._(
                    "This authorization answer belongs to another session (state does not match). "
                    "Press Connect again from the connector, in this browser."
                )
            )

    def _authorization_consume(self, state):
        """The PKCE verifier of the pending authorization, forgotten at once (single use).

        Read again here, on the cursor that clears it: of two answers bringing the same
        ``state`` back, one gets the verifier, the other an OAuth2StateError.
        :return: the verifier, or None when the authorization waited too long
        """
        self.ensure_one()
        if not state or self.pending_state_hash != state_hash(state):
            raise OAuth2StateError(self.env._("This authorization answer was already used. Press Connect again."))
        expired = not self.pending_expires_at or self.pending_expires_at < fields.Datetime.now()
        verifier = None if expired else self._get_secret("pending_verifier")
        self.write(self._pending_cleared())
        return verifier

    @api.model
    def _pending_cleared(self):
        return {
            "pending_state_hash": False,
            "pending_verifier_encrypted": False,
            "pending_user_id": False,
            "pending_session_hash": False,
            "pending_expires_at": False,
        }

    def _set_connection(self, connection_state, message):
        values = {"connection_state": connection_state, "connection_message": message}
        if connection_state == "connected":
            values["connected_at"] = fields.Datetime.now()
        self.write(values)

    def _is_usable(self):
        self.ensure_one()
        if not self.access_token_encrypted:
            return False
        return not self.refresh_after or self.refresh_after > fields.Datetime.now()

    @api.model
    def _store(self, connector, payload):
        """Cache the token endpoint's answer for ``connector``; returns the token record."""
        now = fields.Datetime.now()
        values = {
            "token_type": payload.get("token_type") or "Bearer",
            "scope": payload.get("scope") or False,
            "obtained_at": now,
            "expires_at": False,
            "refresh_after": False,
        }
        try:
            lifetime = int(payload.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0
        if lifetime > 0:
            margin = min(REFRESH_MARGIN_SECONDS, lifetime // 2)
            values["expires_at"] = now + timedelta(seconds=lifetime)
            values["refresh_after"] = now + timedelta(seconds=lifetime - margin)
        token = self._for_connector(connector)
        token.write(values)
        token._set_secret("access_token", payload["access_token"])
        # Keep a refresh token the server sent before if it sends none this time.
        if payload.get("refresh_token"):
            token._set_secret("refresh_token", payload["refresh_token"])
        return token
