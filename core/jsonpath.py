"""Dotted paths into parsed JSON, and JSON values as Odoo field values (webhook event ids
and types, rule field mappings)."""

import json
from datetime import date, datetime, timezone


def json_path_get(document, path):
    """Value at a dotted ``path`` ("data.object.id", "items.0.sku") in parsed JSON, or None."""
    value = document
    for part in (path or "").split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isascii() and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def field_value(value, ttype):
    """``value`` (from parsed JSON) as a value for an Odoo field of type ``ttype``.

    None gives False (the field is emptied); objects and arrays are kept as JSON text.
    Raises ValueError or TypeError when the value does not fit the type.
    """
    if value is None:
        return False
    if ttype == "integer":
        return int(value)
    if ttype in ("float", "monetary"):
        return float(value)
    if ttype == "boolean":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if isinstance(value, dict | list):
        return json.dumps(value)
    if ttype == "datetime":
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
    if ttype == "date":
        return date.fromisoformat(str(value)[:10])
    return str(value)
