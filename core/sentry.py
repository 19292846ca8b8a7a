"""Optional error tracking: terminal call failures sent to Sentry, scrubbed.

Used only when ``sentry_sdk`` imports and a DSN is configured; otherwise every function
here is a no-op that imports nothing. The addon keeps a client of its own, made on first
use and kept for the process, and never binds it globally (no ``sentry_sdk.init``):

- a global init would switch on the SDK's default integrations for the whole server
  (every ERROR logged by any module, the excepthook, threads, breadcrumbs of every log
  line), which is not this addon's call and would carry other modules' data;
- a client another addon (e.g. OCA's ``sentry``) initialised globally keeps its own
  settings and is left alone; it is not used either, since its options (local variables
  of frames, default PII) are not ours to vouch for. The call lines at ERROR level reach
  it through its logging integration anyway, and they are redacted.

Events carry no stack frames and no local variables; ``before_send`` scrubs the whole
event (message, exception values, tags, extra, breadcrumbs, request) of the connector's
secret values and of sensitive query parameters and keys, whatever put them there.
"""

import atexit
import threading

from .redact import MASK, is_sensitive_name, redact_query_strings, redact_text

# Keys of the hint that hand the connector's secrets to before_send.
HINT_SECRETS = "integration_hub_secrets"
HINT_NAMES = "integration_hub_names"
# How the failure was caught: handled by the call path, not an uncaught exception.
MECHANISM = {"type": "integration_hub", "handled": True}
# Sentry cuts tag values at 200 characters.
TAG_LIMIT = 200

_lock = threading.Lock()
# The process's client and the DSN it was made for; "sdk": the module, or False once the
# import failed (tried once per process).
_state = {"client": None, "dsn": None, "sdk": None}


def _sdk():
    if _state["sdk"] is None:
        try:
            import sentry_sdk
        except ImportError:
            _state["sdk"] = False
        else:
            _state["sdk"] = sentry_sdk
    return _state["sdk"] or None


def is_available():
    """True when the sentry-sdk package is installed."""
    return _sdk() is not None


def client_for(dsn):
    """The addon's Sentry client for ``dsn``, made on first use; None without a DSN or
    without sentry-sdk (nothing is imported then, nothing changes)."""
    if not dsn or not is_available():
        return None
    client = _state["client"]
    if client is not None and _state["dsn"] == dsn:
        return client
    return init(dsn)


def init(dsn, transport=None):
    """Make (or remake, for another DSN) the process's client; ``transport`` replaces the
    HTTP transport (tests hand a ``sentry_sdk.transport.Transport`` subclass)."""
    sentry_sdk = _sdk()
    if sentry_sdk is None:
        return None
    options = {
        "dsn": dsn,
        # Nothing patched in the process: this client sends what it is given, nothing else.
        "default_integrations": False,
        "auto_enabling_integrations": False,
        "integrations": [],
        # send_default_pii stays at its default, off (recent SDKs deprecate the option
        # itself, for data_collection); no local variables, no source lines in frames.
        "include_local_variables": False,
        "include_source_context": False,
        "attach_stacktrace": False,
        "max_breadcrumbs": 0,
        "enable_backpressure_handling": False,
        "before_send": scrub_event,
        "before_breadcrumb": _drop_breadcrumb,
    }
    if transport is not None:
        options["transport"] = transport
    with _lock:
        _close(_state["client"])
        client = sentry_sdk.Client(**options)
        _state.update(client=client, dsn=dsn)
    return client


def reset():
    """Close and forget the process's client (a changed DSN, the end of a test)."""
    with _lock:
        _close(_state["client"])
        _state.update(client=None, dsn=None)


def _close(client):
    if client is not None:
        client.close(timeout=2)


@atexit.register
def _flush_at_exit():
    # The client is not bound globally, so the SDK's own atexit hook does not know it.
    client = _state["client"]
    if client is not None:
        client.flush(timeout=2)


def capture_failure(client, *, message, error_type, tags, extra=None, fingerprint=None, secrets=(), names=()):
    """Send one terminal failure (already redacted by the caller) as an error event.

    :param secrets: the connector's clear secret values, scrubbed from the whole event
        once more by ``before_send``
    :param names: header and parameter names that carry the connector's credentials
    :return: the event id, or None when the client dropped it
    """
    event = {
        "level": "error",
        "logger": "integration_hub",
        "message": message,
        "exception": {"values": [{"type": error_type, "value": message, "mechanism": dict(MECHANISM)}]},
        "tags": {name: str(value)[:TAG_LIMIT] for name, value in tags.items() if value not in (None, False, "")},
        "extra": dict(extra or {}),
    }
    if fingerprint:
        event["fingerprint"] = [str(part) for part in fingerprint]
    return client.capture_event(event, hint={HINT_SECRETS: list(secrets), HINT_NAMES: list(names)})


def scrub_event(event, hint):
    """``before_send``: every string of the event without the secrets of the hint, without
    sensitive query parameters, and every value under a sensitive key masked."""
    secrets = [s for s in (hint or {}).get(HINT_SECRETS, ()) if s]
    names = (hint or {}).get(HINT_NAMES, ())
    return _scrub(event, secrets, names)


def _scrub(value, secrets, names, key=None):
    if isinstance(value, dict):
        return {k: _scrub(v, secrets, names, key=k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets, names) for v in value]
    if isinstance(value, str):
        if key is not None and is_sensitive_name(str(key), names):
            return MASK
        return redact_query_strings(redact_text(value, secrets) if secrets else value, names)
    return value


def _drop_breadcrumb(crumb, hint):
    return None
