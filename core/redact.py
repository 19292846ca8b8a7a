"""Redaction of secrets from anything that is logged or stored.

Applied to URLs, headers and free text before they reach a log line, an error record,
a chatter message or a job argument.
"""

import logging
import re
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from .textsafe import clean_text

MASK = "***"

# Header and parameter names that carry credentials or signatures.
_SENSITIVE_NAME = re.compile(
    r"(^authorization$|^proxy-authorization$|^cookie$|^set-cookie$|"
    r"key|token|secret|passw|signature|hmac|credential|session|^auth$|^code$|^sig$)",
    re.IGNORECASE,
)
_CRLF = re.compile(r"[\r\n]+")
# Query parameter names seen carrying a secret in this process (connector settings).
_registered_names = set()


def register_sensitive_name(name):
    """Treat query parameter ``name`` as secret in every later redaction of this process."""
    if name:
        _registered_names.add(name.lower())


def is_sensitive_name(name, extra_names=()):
    lowered = (name or "").lower()
    return (
        bool(_SENSITIVE_NAME.search(lowered))
        or lowered in _registered_names
        or lowered in {n.lower() for n in extra_names if n}
    )


def redact_headers(headers, extra_names=()):
    """Copy of ``headers`` with sensitive values masked."""
    return {name: (MASK if is_sensitive_name(name, extra_names) else value) for name, value in (headers or {}).items()}


def redact_url(url, extra_names=()):
    """``url`` with user info and sensitive query parameters masked."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if is_sensitive_name(k, extra_names) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text, secrets=(), limit=None):
    """Mask every occurrence of the given secret values in ``text``, strip CR/LF, truncate.

    Also made storable (``textsafe.clean_text``): what is redacted is written somewhere,
    and a NUL from a sender's value in an error message would fail that write.
    """
    if text is None:
        return ""
    text = str(text)
    # Also the encoded forms a secret takes in a URL or a form body a remote may echo.
    forms = {form for s in secrets if s and len(s) >= 4 for form in (s, quote(s, safe=""), quote_plus(s, safe=""))}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = clean_text(_CRLF.sub(" ", text))
    if limit and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


_QUERY_PAIR = re.compile(r"([?&])([^=&\s\"']+)=([^&\s\"']*)")


def redact_query_strings(text, extra_names=()):
    """Mask sensitive ``name=value`` pairs of every query string inside ``text``."""
    return _QUERY_PAIR.sub(
        lambda m: f"{m.group(1)}{m.group(2)}={MASK if is_sensitive_name(m.group(2), extra_names) else m.group(3)}",
        text,
    )


class QueryStringRedactingFilter(logging.Filter):
    """Logging filter for libraries that log request URLs (urllib3 at DEBUG level)."""

    def filter(self, record):
        message = record.getMessage()
        redacted = redact_query_strings(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
