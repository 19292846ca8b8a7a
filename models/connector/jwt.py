import hashlib
import json
import threading
import time
from collections import deque

from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...core import jwt_assertion
from ...core.exceptions import AssertionKeyError
from ..integration_oauth_token import REFRESH_MARGIN_SECONDS
from ..integration_secret_mixin import secret_fields

# Assertions signed by this process, per (database, connector): the one to reuse while it
# is fresh, and the last few signed, to scrub from messages (a remote may echo them).
_assertions = {}
_recent = {}
_assertions_lock = threading.Lock()
RECENT_ASSERTIONS = 8


class IntegrationConnector(models.Model):
    """JWT bearer: a signed assertion authenticates each call, or is exchanged for a token.

    Two uses of the same settings: authentication type ``jwt`` sends the assertion itself
    as ``Authorization: Bearer <jwt>`` (a new one per call, or one reused until shortly
    before it expires); the OAuth2 grant ``jwt_bearer`` (RFC 7523) sends a fresh assertion
    to the token URL and caches the access token it gets like any OAuth2 token.
    HS256 signs with a shared secret, RS256 / ES256 with a private key (PEM); both are
    write-only secrets. Signing is ``core.jwt_assertion`` (``cryptography``, no JWT library).
    """

    _inherit = "integration.connector"

    jwt_algorithm = fields.Selection(
        [("HS256", "HS256 (shared secret)"), ("RS256", "RS256 (RSA private key)"), ("ES256", "ES256 (EC P-256 key)")],
        string="Signing Algorithm",
        default="RS256",
    )
    jwt_issuer = fields.Char(string="Issuer (iss)", help="Often the client ID or service account e-mail.")
    jwt_subject = fields.Char(string="Subject (sub)", help="The account the calls act for, when the partner wants one.")
    jwt_audience = fields.Char(
        string="Audience (aud)",
        help="Who the assertion is for. Empty with the JWT bearer grant: the token URL (RFC 7523).",
    )
    jwt_lifetime = fields.Integer(string="Assertion Lifetime (s)", default=300)
    jwt_extra_claims = fields.Text(
        string="Extra Claims", help='JSON object of further claims, e.g. {"scope": "https://api.example.com/orders"}.'
    )
    jwt_key_id = fields.Char(string="Key ID (kid)", help="Sent in the JWT header when the partner holds several keys.")
    jwt_reuse = fields.Boolean(
        string="Reuse Assertion",
        help="Off: a new assertion (with its own jti) for every call. On: one assertion per worker process, "
        "replaced shortly before it expires (for partners that do not need a unique jti per call).",
    )
    jwt_secret, jwt_secret_encrypted, jwt_secret_is_set = secret_fields("JWT Shared Secret")
    jwt_private_key, jwt_private_key_encrypted, jwt_private_key_is_set = secret_fields(
        "JWT Private Key", help="PEM private key (-----BEGIN PRIVATE KEY-----...); line breaks may be lost in pasting."
    )
    jwt_in_use = fields.Boolean(compute="_compute_jwt_in_use")

    @api.depends("auth_type", "oauth2_grant_type")
    def _compute_jwt_in_use(self):
        for connector in self:
            connector.jwt_in_use = connector._jwt_in_use()

    def _jwt_in_use(self):
        return self.auth_type == "jwt" or (self.auth_type == "oauth2" and self.oauth2_grant_type == "jwt_bearer")

    @api.constrains(
        "auth_type", "oauth2_grant_type", "jwt_algorithm", "jwt_lifetime", "jwt_extra_claims", "jwt_private_key"
    )
    def _check_jwt_settings(self):
        for connector in self.filtered(lambda c: c._jwt_in_use()):
            low, high = jwt_assertion.MIN_LIFETIME, jwt_assertion.MAX_LIFETIME
            if not low <= connector.jwt_lifetime <= high:
                raise ValidationError(
                    self.env._("Assertion Lifetime must be between %(low)s and %(high)s seconds.", low=low, high=high)
                )
            connector._jwt_extra_claims()
            if connector.jwt_algorithm != "HS256" and connector.jwt_private_key_encrypted:
                # Say now, not at the first call, that the key does not fit the algorithm.
                try:
                    connector._jwt_signing_key()
                except AssertionKeyError as exc:
                    raise ValidationError(str(exc)) from None

    def _jwt_extra_claims(self):
        text = (self.jwt_extra_claims or "").strip()
        try:
            return jwt_assertion.check_extra_claims(json.loads(text) if text else None)
        except ValueError as exc:
            raise ValidationError(self.env._("Extra Claims: %s", exc)) from None

    def _jwt_signing_key(self):
        secret = "jwt_secret" if self.jwt_algorithm == "HS256" else "jwt_private_key"
        try:
            return jwt_assertion.load_signing_key(self.jwt_algorithm, self._require_secret(secret))
        except AssertionKeyError as exc:
            # The core's message never holds the key; name the connector and the field.
            raise AssertionKeyError(
                self.env._(
                    "Connector %(code)s: %(field)s: %(reason)s",
                    code=self.code,
                    field=self._fields[secret].string,
                    reason=exc,
                )
            ) from None

    def _auth_apply_jwt(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._jwt_assertion(reuse=self.jwt_reuse)}"

    def _jwt_assertion(self, audience=None, reuse=False):
        """A signed assertion; with ``reuse``, the one this process signed last while it is
        fresh (replaced ``REFRESH_MARGIN_SECONDS`` before it expires, or at half-life)."""
        self.ensure_one()
        audience = self.jwt_audience or audience
        slot = (self.env.cr.dbname, self.id)
        fingerprint = self._jwt_fingerprint(audience)
        now = time.time()
        if reuse:
            cached = _assertions.get(slot)
            if cached and cached[0] == fingerprint and now < cached[2]:
                return cached[1]
        lifetime = self.jwt_lifetime
        claims = jwt_assertion.build_claims(
            issuer=self.jwt_issuer,
            subject=self.jwt_subject,
            audience=audience,
            lifetime=lifetime,
            extra=self._jwt_extra_claims(),
            now=now,
        )
        token = jwt_assertion.encode(claims, self.jwt_algorithm, self._jwt_signing_key(), key_id=self.jwt_key_id)
        with _assertions_lock:
            _assertions[slot] = (fingerprint, token, now + lifetime - min(REFRESH_MARGIN_SECONDS, lifetime // 2))
            _recent.setdefault(slot, deque(maxlen=RECENT_ASSERTIONS)).append(token)
        return token

    def _jwt_fingerprint(self, audience):
        """Changes with any setting the assertion depends on (a reused one is then dropped)."""
        settings = [
            self.jwt_algorithm,
            self.jwt_issuer,
            self.jwt_subject,
            audience,
            self.jwt_lifetime,
            self.jwt_extra_claims,
            self.jwt_key_id,
            self.sudo().jwt_secret_encrypted,
            self.sudo().jwt_private_key_encrypted,
        ]
        return hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()

    def _jwt_forget_assertion(self):
        """Drop the reused assertion (the API refused it): the next call signs a new one."""
        with _assertions_lock:
            _assertions.pop((self.env.cr.dbname, self.id), None)

    def _known_secret_values(self):
        values = super()._known_secret_values()
        values.extend(_recent.get((self.env.cr.dbname, self.id), ()))
        return values
