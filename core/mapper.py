"""The one field mapper of the addon: remote JSON documents <-> Odoo field values.

Webhook rules (remote -> Odoo) and sync flows (both ways) compile their map lines into a
``FieldMap`` and call it per document; the conversions are ``jsonpath.field_value`` one way
and ``remote_value`` the other. No ORM here: a line is (remote path, field name, field
type, label), so the mapper is tested without a database and costs nothing per record
beyond the conversions themselves.
"""

from datetime import date, datetime, timezone

from .exceptions import MappingError
from .jsonpath import field_value, json_path_get


def remote_value(value, ttype, as_string=False):
    """An Odoo field value as JSON for a partner: datetimes ISO 8601 in UTC with ``Z``,
    dates ISO, empty values None (False for an empty boolean). With ``as_string`` every value
    travels as text (feeds whose schema says so): None as "", booleans "true"/"false"."""
    if ttype == "boolean":
        value = bool(value)
    elif value is False or value is None:
        value = None
    elif isinstance(value, datetime):
        moment = value.astimezone(timezone.utc) if value.tzinfo else value
        value = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif isinstance(value, date):
        value = value.isoformat()
    if not as_string:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _set_path(document, parts, value):
    for part in parts[:-1]:
        document = document.setdefault(part, {})
        if not isinstance(document, dict):
            raise MappingError(f"{'.'.join(parts)}: {part!r} is both a value and an object in the map")
    document[parts[-1]] = value


class FieldMap:
    """Compiled map lines: ``[(remote_path, field_name, ttype, label), ...]``."""

    __slots__ = ("lines",)

    def __init__(self, lines):
        self.lines = [(path, path.split("."), name, ttype, label or name) for path, name, ttype, label in lines]

    def __bool__(self):
        return bool(self.lines)

    @property
    def field_names(self):
        return [line[2] for line in self.lines]

    def to_odoo(self, document):
        """The Odoo values of a remote document; raises MappingError naming the line."""
        values = {}
        for path, _parts, name, ttype, label in self.lines:
            value = json_path_get(document, path)
            try:
                values[name] = field_value(value, ttype)
            except (TypeError, ValueError) as exc:
                raise MappingError(
                    f"Field {label}: {str(value)[:100]!r} at {path!r} is not a valid {ttype} ({exc}).",
                    field=name,
                    path=path,
                ) from None
        return values

    def to_remote(self, values, as_string=False):
        """The remote document of Odoo ``values`` (as ``read`` gives them, by field name)."""
        document = {}
        for _path, parts, name, ttype, _label in self.lines:
            value = values.get(name)
            if ttype == "many2one":
                value = value[0] if value else False
            _set_path(document, parts, remote_value(value, ttype, as_string))
        return document
