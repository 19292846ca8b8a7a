from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..core.exceptions import MappingError
from ..core.mapper import FieldMap

# Field types a remote value can be written to (and read from) without code.
MAPPABLE_TYPES = ("char", "text", "html", "integer", "float", "monetary", "boolean", "date", "datetime", "selection")


class IntegrationFieldMapMixin(models.AbstractModel):
    """One line of a no-code field map: a dotted path in the remote document <-> a field of
    the owner's model. Webhook rules and sync flows both have such lines; the conversion
    is ``core.mapper.FieldMap``, compiled from the lines by ``_field_map``.

    An inheriting model defines ``model_id`` (the model of its owner) and the owner link.
    """

    _name = "integration.field.map.mixin"
    _description = "Field Map Line (remote path <-> Odoo field)"
    _order = "sequence, id"

    sequence = fields.Integer(default=10)
    field_id = fields.Many2one(
        "ir.model.fields",
        required=True,
        ondelete="cascade",
        domain=f"[('model_id', '=', model_id), ('ttype', 'in', {list(MAPPABLE_TYPES)}), ('store', '=', True)]",
    )
    json_path = fields.Char(
        string="JSON Path",
        required=True,
        help="Dotted path in the remote document, e.g. 'customer.email' or 'items.0.sku'.",
    )

    @api.constrains("field_id")
    def _check_field(self):
        for line in self:
            if line.field_id.model_id != line.model_id:
                raise ValidationError(
                    self.env._("Field %s is not a field of the mapped model.", line.field_id.field_description)
                )
            if line.field_id.ttype not in MAPPABLE_TYPES:
                raise ValidationError(
                    self.env._(
                        "Field %(field)s is a %(type)s field; only simple values can be mapped without code.",
                        field=line.field_id.field_description,
                        type=line.field_id.ttype,
                    )
                )

    def _field_map(self):
        """These lines as a plain ``FieldMap`` (read once, used for every document)."""
        return FieldMap(
            [
                (line.json_path, line.field_id.name, line.field_id.ttype, line.field_id.field_description)
                for line in self
            ]
        )

    @api.model
    def _to_odoo(self, field_map, document):
        """``field_map.to_odoo(document)``, its errors as a UserError a person reads."""
        try:
            return field_map.to_odoo(document)
        except MappingError as exc:
            raise UserError(str(exc)) from None
