import secrets

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..const import METRICS_ROUTE, METRICS_TOKEN_PARAM
from ..controllers.metrics import token_digest
from ..core.actions import notification

MIN_TOKEN_LENGTH = 32


class ResConfigSettings(models.TransientModel):
    """Settings → Integrations: the bearer token of the Prometheus metrics route.

    Only the token's SHA-256 is kept (a system parameter): a database dump, a copy or a
    look at System Parameters gives nothing to scrape with, and a token of 32 or more
    random characters cannot be found back from its hash. So the token is shown once,
    when generated, and replaced rather than read.
    """

    _inherit = "res.config.settings"

    integration_metrics_token = fields.Char(
        string="New Metrics Token",
        compute="_compute_integration_metrics_token",
        inverse="_inverse_integration_metrics_token",
        groups="base.group_system",
        help=f"Bearer token Prometheus sends to {METRICS_ROUTE}; at least {MIN_TOKEN_LENGTH} characters. "
        "Only its hash is kept: type or paste a new one to replace the current one.",
    )
    integration_metrics_enabled = fields.Boolean(
        string="Metrics Token Set", compute="_compute_integration_metrics_enabled", groups="base.group_system"
    )
    integration_metrics_url = fields.Char(
        string="Metrics URL", compute="_compute_integration_metrics_enabled", groups="base.group_system"
    )

    def _compute_integration_metrics_token(self):
        # Never read back: the field only carries a new token to its inverse (not stored,
        # so the token in clear never reaches the settings' table either).
        for settings in self:
            settings.integration_metrics_token = False

    def _inverse_integration_metrics_token(self):
        for settings in self:
            token = (settings.integration_metrics_token or "").strip()
            if not token:
                continue
            if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise UserError(
                    self.env._(
                        "The metrics token must be at least %(length)s characters without spaces "
                        "(for example the output of 'openssl rand -hex 32').",
                        length=MIN_TOKEN_LENGTH,
                    )
                )
            self.env["ir.config_parameter"].sudo().set_param(METRICS_TOKEN_PARAM, token_digest(token))

    @api.depends("integration_metrics_token")
    def _compute_integration_metrics_enabled(self):
        params = self.env["ir.config_parameter"].sudo()
        enabled = bool(params.get_param(METRICS_TOKEN_PARAM))
        url = params.get_param("web.base.url", "").rstrip("/") + METRICS_ROUTE
        for settings in self:
            settings.integration_metrics_enabled = enabled
            settings.integration_metrics_url = url

    def action_integration_metrics_generate_token(self):
        """Button: a new random token, stored as its hash and shown once in a notification."""
        self.ensure_one()
        token = secrets.token_urlsafe(32)
        self.env["ir.config_parameter"].sudo().set_param(METRICS_TOKEN_PARAM, token_digest(token))
        return notification(
            self.env._("New metrics token"),
            self.env._(
                "Copy it into Prometheus now; it is not shown again (the previous token no longer works): %s", token
            ),
            kind="warning",
            sticky=True,
        )

    def action_integration_metrics_disable(self):
        """Button: forget the token; the route answers 404 again."""
        self.env["ir.config_parameter"].sudo().set_param(METRICS_TOKEN_PARAM, False)
        return {"type": "ir.actions.client", "tag": "soft_reload"}
