"""Client actions the addon's buttons return (no ORM: plain dictionaries)."""


def notification(title, message, kind="success", sticky=False, reload=True):
    """A notification in the web client (``kind``: success, warning, danger, info); with
    ``reload``, the current view reloads after it (the record a button changed)."""
    params = {"title": title, "message": message, "type": kind, "sticky": sticky}
    if reload:
        params["next"] = {"type": "ir.actions.client", "tag": "soft_reload"}
    return {"type": "ir.actions.client", "tag": "display_notification", "params": params}
