"""Retry delays: Retry-After parsing and exponential backoff with full jitter."""

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

# The jitter of job retry delays; tests seed it through this module attribute.
jitter_random = random.Random()


def parse_retry_after(value, now=None):
    """Seconds to wait from a ``Retry-After`` header value, or None if absent or invalid.

    Accepts both forms of RFC 9110: delay-seconds ("120") and an HTTP-date
    ("Wed, 21 Oct 2026 07:28:00 GMT"). A date in the past gives 0.
    """
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def full_jitter(attempt, base, cap, rng=None):
    """Random delay in [0, min(cap, base * 2**attempt)] ("full jitter").

    Spreads the retries of many clients that failed together instead of making them
    come back in waves. ``attempt`` counts from 0.
    """
    rng = rng or random
    ceiling = min(float(cap), float(base) * (2 ** max(0, int(attempt))))
    return rng.uniform(0.0, ceiling)


def retry_delay(attempt, base, cap, retry_after=None, rng=None):
    """The delay before the next attempt: the server's Retry-After when it gave one."""
    if retry_after is not None:
        return float(retry_after)
    return full_jitter(attempt, base, cap, rng=rng)
