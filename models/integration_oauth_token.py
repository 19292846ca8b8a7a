from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import AccessError

from ..const import MANAGER_GROUP
from .integration_secret_mixin import secret_fields

# Refresh this long before the announced expiry (or half the lifetime of short tokens),
# so that a token is never sent in the last seconds of its life.
REFRESH_MARGIN_SECONDS = 60


class IntegrationOauthToken(models.Model):
    """The OAuth2 access token of a connector, cached in the database.

    Kept apart from the connector so that refreshing a token does not write (and lock)
    the connector's configuration row, and so that every worker and server on the
    database reuses one token. ``refresh_token`` is there for grants that have one
    (authorization code); client credentials leave it empty.
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

    def _clear(self):
        self.write(
            {
                "access_token_encrypted": False,
                "refresh_token_encrypted": False,
                "token_type": False,
                "scope": False,
                "obtained_at": False,
                "expires_at": False,
                "refresh_after": False,
            }
        )

    def action_forget(self):
        """Button (managers): drop the cached token; the next call fetches a new one."""
        self.check_access("read")
        if not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Only integration managers can forget OAuth2 tokens."))
        self.sudo()._clear()
        return True

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
