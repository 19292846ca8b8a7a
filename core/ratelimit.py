"""Rate limit arithmetic: the generic cell rate algorithm (GCRA).

A token bucket kept as one number, the "theoretical arrival time" (TAT): the time at
which the bucket will be full again. With a rate of ``r`` calls per second the emission
interval is ``T = 1/r``; a burst of ``b`` calls is allowed by tolerating calls up to
``tau = (b - 1) * T`` ahead of the TAT. A call at time ``now`` may go at

    start = max(now, TAT - tau, blocked_until)

and moves the TAT to ``max(TAT, now) + T``. Taking that slot even when ``start`` is a
little in the future (then sleeping until it) serves waiting callers in order and keeps
the rate exact. The state is a timestamp, so it lives in one PostgreSQL row shared by
every worker (see ``integration.connector.state``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Reservation:
    wait: float  # seconds until the call may be sent (0: now)
    granted: bool  # False: the wait exceeds what the caller accepts, nothing reserved
    tat: float | None  # the new TAT when granted


def reserve(now, tat, rate, burst, max_wait, blocked_until=None):
    """Decide one call. Times are seconds on one clock (the database's).

    :param tat: current TAT, or None for a fresh (full) bucket
    :param rate: calls per second; 0 or None means no limit (only ``blocked_until`` applies)
    :param burst: calls allowed back to back when the bucket is full (>= 1)
    :param max_wait: longest wait the caller accepts to take a slot
    :param blocked_until: time before which nothing may be sent (a 429's Retry-After)
    """
    blocked_until = blocked_until or now
    if not rate:
        start = max(now, blocked_until)
        wait = start - now
        return Reservation(wait, wait <= max_wait, tat)
    interval = 1.0 / rate
    tau = (max(1, int(burst)) - 1) * interval
    tat = now if tat is None else tat
    start = max(now, tat - tau, blocked_until)
    wait = start - now
    if wait > max_wait:
        return Reservation(wait, False, None)
    return Reservation(wait, True, max(tat, start) + interval)


def drain(now, tat, rate, burst, retry_after):
    """TAT after a 429: the bucket is empty until ``now + retry_after``."""
    until = now + retry_after
    if not rate:
        return tat
    tau = (max(1, int(burst)) - 1) / rate
    return max(tat if tat is not None else now, until + tau)
