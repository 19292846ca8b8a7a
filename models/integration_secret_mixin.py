import logging
import os

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import config

from ..const import KEYS_CONFIG_OPTION, KEYS_ENV_VARIABLE, MANAGER_GROUP
from ..core.crypto import KEY_GENERATE_HINT, SecretBox, parse_keys
from ..core.exceptions import EncryptionKeyError, SecretDecryptionError

_logger = logging.getLogger(__name__)


def secret_fields(string, help=None):
    """Declare one write-only secret: ``(input, ciphertext, is_set)`` fields.

    Usage in a model inheriting ``integration.secret.mixin``::

        api_key, api_key_encrypted, api_key_is_set = secret_fields("API Key")

    The input field reads back empty for everyone; what is typed into it is encrypted
    into the ciphertext column on save. Only managers can write it or see the column.
    """
    return (
        fields.Char(
            string=string,
            help=help,
            compute="_compute_secret_inputs",
            inverse="_inverse_secret_inputs",
            groups=MANAGER_GROUP,
            copy=False,
        ),
        fields.Char(string=f"{string} (encrypted)", groups=MANAGER_GROUP, copy=False, readonly=True, prefetch=False),
        fields.Boolean(string=f"{string} Set", compute="_compute_secret_is_set", compute_sudo=True),
    )


def _is_blank(value):
    """What a write means as "no secret": False, None, or text of blanks only."""
    return value is None or value is False or (isinstance(value, str) and not value.strip())


class IntegrationSecretMixin(models.AbstractModel):
    """Encrypted, write-only secret fields (see ``secret_fields``).

    Encryption keys come from the environment variable INTEGRATION_HUB_ENCRYPTION_KEYS
    or, when it is unset or empty, from ``integration_hub_encryption_keys`` in the
    ``[options]`` section of the Odoo configuration file.
    """

    _name = "integration.secret.mixin"
    _description = "Encrypted Secrets"

    @api.model
    def _secret_field_names(self):
        return [name for name, field in self._fields.items() if field.compute == "_compute_secret_inputs"]

    @api.model
    def _secret_box(self):
        raw = os.environ.get(KEYS_ENV_VARIABLE) or config.get(KEYS_CONFIG_OPTION)
        keys = parse_keys(raw)
        if not keys:
            raise UserError(
                self.env._(
                    "Secrets cannot be stored: no encryption key is configured. Set "
                    "'%(option)s' in the [options] section of the Odoo configuration file, or "
                    "the environment variable %(env)s, to one or more Fernet keys (comma "
                    "separated, newest first), then restart Odoo. Generate a key with: %(hint)s",
                    option=KEYS_CONFIG_OPTION,
                    env=KEYS_ENV_VARIABLE,
                    hint=KEY_GENERATE_HINT,
                )
            )
        try:
            return SecretBox(keys)
        except EncryptionKeyError as exc:
            raise UserError(self.env._("Invalid encryption key configuration: %s", exc)) from None

    @api.model_create_multi
    def create(self, vals_list):
        self._check_secret_box_for(vals_list)
        return super().create(vals_list)

    def write(self, vals):
        self._check_secret_box_for([vals])
        # Writing nothing to a secret (False, None, "", blanks: what a provisioning script
        # sends over RPC) clears it, as the Clear button does: keeping the old secret
        # silently would leave a credential the caller meant to remove.
        cleared = [name for name in self._secret_field_names() if name in vals and _is_blank(vals[name])]
        if cleared:
            vals = dict(vals)
            for name in cleared:
                del vals[name]
                vals[f"{name}_encrypted"] = False
            had = {record.id: [n for n in cleared if record.sudo()[f"{n}_encrypted"]] for record in self}
        result = super().write(vals)
        if cleared:
            for record in self:
                if had[record.id]:
                    labels = [record._fields[name].string for name in had[record.id]]
                    record._secret_changed_note(labels, self.env._("cleared"))
        return result

    @api.model
    def _check_secret_box_for(self, vals_list):
        """Refuse, before anything is written, values with a secret we could not encrypt."""
        names = self._secret_field_names()
        if any(vals.get(name) for vals in vals_list for name in names):
            self._secret_box()

    def _compute_secret_inputs(self):
        # Write-only: a secret is never read back, whoever asks.
        for name in self._secret_field_names():
            self[name] = False

    def _inverse_secret_inputs(self):
        for record in self:
            changed = []
            for name in record._secret_field_names():
                # A pasted token often brings a newline along; no credential has one.
                value = (record[name] or "").strip()
                if value:
                    record[f"{name}_encrypted"] = record._secret_box().encrypt(value)
                    changed.append(record._fields[name].string)
            if changed:
                record._secret_changed_note(changed, self.env._("replaced"))

    @api.depends(lambda self: [f"{name}_encrypted" for name in self._secret_field_names()])
    def _compute_secret_is_set(self):
        for record in self:
            for name in record._secret_field_names():
                record[f"{name}_is_set"] = bool(record[f"{name}_encrypted"])

    def _secret_changed_note(self, labels, verb):
        """Leave an audit trace of which secret changed (never its value)."""
        if hasattr(self, "_message_log"):
            self._message_log(
                body=self.env._(
                    "%(secrets)s %(verb)s by %(user)s.", secrets=", ".join(labels), verb=verb, user=self.env.user.name
                ),
            )

    def _get_secret(self, name):
        """Decrypted value of secret ``name``, or None when it is not set.

        For the call path only: the value must not be logged, stored or returned to a client.
        """
        self.ensure_one()
        if name not in self._secret_field_names():
            raise ValueError(f"{name!r} is not a secret field of {self._name}")
        token = self.sudo()[f"{name}_encrypted"]
        if not token:
            return None
        try:
            return self._secret_box().decrypt(token)
        except SecretDecryptionError as exc:
            raise UserError(
                self.env._(
                    "The %(secret)s of %(record)s cannot be decrypted: %(reason)s.",
                    secret=self._fields[name].string,
                    record=self.display_name,
                    reason=exc,
                )
            ) from None

    def _set_secret(self, name, value):
        """Store (or, with a falsy value, clear) secret ``name`` from code."""
        self.ensure_one()
        if name not in self._secret_field_names():
            raise ValueError(f"{name!r} is not a secret field of {self._name}")
        self.sudo()[f"{name}_encrypted"] = self._secret_box().encrypt(value) if value else False

    def action_clear_secret(self):
        """Button: forget the secret named in the context key ``secret_field``."""
        name = self.env.context.get("secret_field")
        if name not in self._secret_field_names():
            raise UserError(self.env._("Unknown secret field: %s", name))
        self.check_access("write")
        for record in self:
            record.sudo()[f"{name}_encrypted"] = False
            record._secret_changed_note([record._fields[name].string], self.env._("cleared"))
        return True

    def _rotate_secrets(self):
        """Re-encrypt the stored secrets of these records with the current (first) key."""
        box = self._secret_box()
        names = [f"{name}_encrypted" for name in self._secret_field_names()]
        count = 0
        for record in self.sudo():
            values = {}
            for name in names:
                if record[name]:
                    try:
                        values[name] = box.rotate(record[name])
                    except SecretDecryptionError as exc:
                        raise UserError(
                            self.env._(
                                "%(record)s: %(field)s %(reason)s", record=record.display_name, field=name, reason=exc
                            )
                        ) from None
            if values:
                record.write(values)
                count += len(values)
        _logger.info("%s: re-encrypted %d secret(s) with the current key", self._name, count)
        return count
