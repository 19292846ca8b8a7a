"""Typed errors of the outbound call path.

Each carries a message that is safe to show and store: secrets are redacted before
these are raised. ``retryable`` tells callers (jobs) whether trying again may help.
"""


class IntegrationError(Exception):
    """Base class of every error raised by a connector call."""

    retryable = False


class IntegrationConfigError(IntegrationError):
    """The connector's configuration makes the call impossible (bad URL, missing secret)."""


class IntegrationAuthError(IntegrationError):
    """Credentials were refused or a token could not be obtained."""


class IntegrationConnectionError(IntegrationError):
    """The remote could not be reached: refused connection, DNS, TLS, timeout."""

    retryable = True


# HTTP statuses worth retrying: the request may succeed later unchanged.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class IntegrationHTTPError(IntegrationError):
    """The remote answered with an HTTP error status."""

    def __init__(self, message, status_code, method=None, url=None, remote_message=None):
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.url = url
        self.remote_message = remote_message

    @property
    def retryable(self):
        return self.status_code in RETRYABLE_STATUSES
