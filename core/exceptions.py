"""Every exception class of the addon, each with what it means.

The outbound call path raises ``IntegrationError`` subclasses: each carries a message
that is safe to show and store (secrets are redacted before these are raised), and
``retryable`` tells callers (jobs) whether trying again may help. The others belong to
one part of the addon each (keys, signatures, URL safety, shared state, webhook
processing) and are named after what went wrong there.
"""

import re


class IntegrationError(Exception):
    """Base class of every error raised by a connector call."""

    retryable = False


class IntegrationConfigError(IntegrationError):
    """The connector's configuration makes the call impossible (bad URL, missing secret)."""


class IntegrationAuthError(IntegrationError):
    """Credentials were refused or a token could not be obtained.

    ``oauth2_error`` is the token endpoint's error code when it gave one (RFC 6749 5.2:
    ``invalid_grant``, ``invalid_client``...).
    """

    def __init__(self, message, oauth2_error=None):
        super().__init__(message)
        self.oauth2_error = oauth2_error


class IntegrationReconnectNeededError(IntegrationAuthError):
    """An authorization-code connector holds no usable grant: a manager must press Connect.

    ``refused`` is true when the provider has just refused the stored refresh token (the
    connector then forgets it and shows "reconnect needed").
    """

    def __init__(self, message, refused=False):
        super().__init__(message, oauth2_error="invalid_grant" if refused else None)
        self.refused = refused


class AssertionKeyError(IntegrationConfigError):
    """The JWT signing key cannot be read or does not fit the chosen algorithm."""


class IntegrationConnectionError(IntegrationError):
    """The remote could not be reached: refused connection, DNS, TLS, timeout."""

    retryable = True


class IntegrationTimeLimitError(IntegrationConnectionError):
    """The running job reached its time limit: the call was cut short, or not sent."""


# HTTP statuses worth retrying: the request may succeed later unchanged.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class IntegrationRefusedError(IntegrationError):
    """Nothing was sent: the call was held back on our side, to be tried later."""

    retryable = True

    def __init__(self, message, retry_in=0.0):
        super().__init__(message)
        self.retry_in = retry_in


class IntegrationCircuitOpenError(IntegrationRefusedError):
    """The connector's circuit breaker is open: the remote failed repeatedly."""


class IntegrationRateLimitedError(IntegrationRefusedError):
    """The connector's shared rate budget is spent for longer than the caller waits."""


class IntegrationHTTPError(IntegrationError):
    """The remote answered with an HTTP error status."""

    def __init__(self, message, status_code, method=None, url=None, remote_message=None, retry_after=None):
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.url = url
        self.remote_message = remote_message
        self.retry_after = retry_after

    @property
    def retryable(self):
        return self.status_code in RETRYABLE_STATUSES


# Outside the call path.


class EncryptionKeyError(Exception):
    """No usable encryption key is configured; the message says what to set."""


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any of the configured keys."""


class SignatureError(Exception):
    """A webhook delivery is not authentic (or cannot be checked); the reason is safe to show."""


class WebhookBodyTimeout(Exception):
    """A webhook body did not arrive in time (trickled, or shorter than its Content-Length)."""


class UnsafeURLError(ValueError):
    """The URL or one of its addresses is not allowed for this connector."""


class SharedStateBusyError(Exception):
    """The shared rate-limit/breaker row stayed contended; the caller retries shortly."""


class WebhookEventUnhandled(Exception):
    """No handler knows this event type (the event becomes ignored, or failed)."""


class WebhookEventGaveUp(Exception):
    """A webhook event's transient failures spent the connector's attempts: its job fails."""


class WebhookEventFailed(Exception):
    """Raised to queue_job instead of a handler's error whose text PostgreSQL cannot store (cleaned)."""


class JSONNestingError(ValueError):
    """A JSON text nests arrays and objects deeper than this addon parses (a recursion bomb)."""


class OAuth2StateError(Exception):
    """An authorization answer whose ``state`` is unknown, used, or from another session or user."""


_ROOT_CAUSES = (
    re.compile(r"certificate verify failed: [^'\")(]+"),
    re.compile(r"\[Errno -?\d+\] [^'\")(]+"),
    re.compile(r"\[SSL: [^\]]+\][^'\")(]*"),
    re.compile(r"Read timed out"),
    re.compile(r"timed out"),
)


def describe_transport_error(exc):
    """The part of a requests/urllib3 exception text a person can act on.

    Their messages nest pool and object reprs several levels deep; the cause at the
    bottom ("[Errno 111] Connection refused", "certificate verify failed: ...") is
    what tells an operator what is wrong.
    """
    text = str(exc)
    for pattern in _ROOT_CAUSES:
        match = pattern.search(text)
        if match:
            return match.group(0).strip().rstrip(".,;:")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MappingError(ValueError):
    """A value of a remote document does not fit the Odoo field it is mapped to (or back).

    ``field`` and ``path`` name both ends of the map line; the message says why.
    """

    def __init__(self, message, field=None, path=None):
        super().__init__(message)
        self.field = field
        self.path = path


class SyncPageError(ValueError):
    """A partner's page (or batch answer) is not of the shape the flow expects: the window
    or batch fails readably and no cursor moves."""
