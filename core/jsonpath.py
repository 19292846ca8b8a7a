"""Dotted paths into parsed JSON (webhook event ids and types, rule field mappings)."""


def json_path_get(document, path):
    """Value at a dotted ``path`` ("data.object.id", "items.0.sku") in parsed JSON, or None."""
    value = document
    for part in (path or "").split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value
