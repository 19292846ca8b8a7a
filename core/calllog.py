"""One log line per outbound call: its fields, its level, its text or JSON form.

The connector builds the fields (already redacted: the URL masked, no headers, no
bodies) and logs the message made here. The message itself is the JSON object, not a
formatter of ours: Odoo logs through the one handler it installs on the root logger
(stderr, ``--logfile``, ``--syslog`` or ``--log-db``) with its own prefix, and a
formatter belongs to a handler. Wrapping or duplicating Odoo's handler would change how
every other module logs (or reopen the log file behind logrotate's back); a JSON message
goes wherever Odoo's lines go, keeps ``--log-handler`` levels working, and a log
shipper takes the object after the logger's name (``... <logger>: {...}``). The object
carries its own timestamp and level, so it stands without the prefix.
"""

import json
import logging
import re
from datetime import datetime, timezone

# The values of "outcome", as the hourly metrics count them.
OUTCOMES = ("ok", "client_error", "retryable_error", "connection_error", "refused")
# The order of the fields in a line (text and JSON alike).
FIELDS = (
    "timestamp",
    "level",
    "connector",
    "operation",
    "method",
    "url",
    "status",
    "duration_ms",
    "job_uuid",
    "attempt",
    "outcome",
    "error",
)
FORMATS = ("text", "json")
# Any run of control characters and line separators (CR/LF above all) in a value becomes
# one space: a logged value can never start a line of its own.
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")
# Text values written bare (anything else is quoted as a JSON string).
_BARE = re.compile(r"^[A-Za-z0-9_.:/?&=*%@+,;~\-\[\]]+$")


def parse_format(value):
    """``"json"`` or ``"text"`` from an option's value (anything but json is text)."""
    return "json" if (value or "").strip().lower() == "json" else "text"


def call_level(outcome, final):
    """INFO for a success, ERROR for a failure nothing will retry, WARNING for the others."""
    if outcome == "ok":
        return logging.INFO
    return logging.ERROR if final else logging.WARNING


def utc_timestamp(now=None):
    """ISO 8601 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value):
    if isinstance(value, str):
        return _CONTROL.sub(" ", value).strip()
    return value


def call_fields(level, **values):
    """The fields of a line, in order, with control characters stripped from the text ones."""
    values.setdefault("timestamp", utc_timestamp())
    values["level"] = logging.getLevelName(level)
    duration = values.get("duration_ms")
    if duration is not None:
        values["duration_ms"] = round(float(duration), 1)
    return {name: _clean(values.get(name)) for name in FIELDS}


def _text_value(value):
    if value is None:
        return "-"
    text = str(value)
    return text if _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def format_call_line(fields, log_format="text"):
    """The message of a line: one JSON object, or ``key=value`` pairs (timestamp and
    level left to Odoo's own prefix)."""
    if log_format == "json":
        return json.dumps(fields, ensure_ascii=False, separators=(", ", ": "))
    return " ".join(
        f"{name}={_text_value(value)}" for name, value in fields.items() if name not in ("timestamp", "level")
    )
