"""Dotted paths into parsed JSON, and JSON values as Odoo field values (webhook event ids
and types, rule field mappings)."""

import json
import math
from datetime import date, datetime, timezone
from decimal import Decimal

from .textsafe import clean_text

# Odoo's integer fields are PostgreSQL int4.
INTEGER_RANGE = (-(2**31), 2**31 - 1)


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
    Text is made storable (``textsafe.clean_text``: a NUL or lone surrogate as U+FFFD);
    numbers must fit the column: integers PostgreSQL's int4, floats finite (``1e400``
    parses as an exact ``Decimal``, see ``core/jsonutil.py``, and is refused here).
    Raises ValueError or TypeError when the value does not fit the type (the message says why).
    """
    if value is None:
        return False
    if ttype == "integer":
        return _integer(value)
    if ttype in ("float", "monetary"):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError("not a finite number") from None
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return number
    if ttype == "boolean":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)  # ASCII: a NUL or surrogate stays an escape
    value = clean_text(str(value))
    if ttype == "datetime":
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
    if ttype == "date":
        return date.fromisoformat(value[:10])
    return value


def _integer(value):
    low, high = INTEGER_RANGE
    if isinstance(value, dict | list):
        raise TypeError("not a number")
    if isinstance(value, str):
        value = int(value)  # a ValueError past 4300 digits too
    finite = value.is_finite() if isinstance(value, Decimal) else not isinstance(value, float) or math.isfinite(value)
    if not finite:
        raise ValueError("not a finite number")
    # Compared before converting: int(Decimal("1e999999999")) would build a billion digits.
    if not low <= value <= high:
        raise ValueError(f"out of the integer range {low} to {high}")
    return int(value)
