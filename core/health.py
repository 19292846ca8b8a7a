"""A connector's health from what the hub records, as the product's integration guide defines it.

- *unknown* without any request or probe in the last 24 hours (a connector nobody calls and
  nobody probes is not healthy, and nothing says it is failing either);
- otherwise success rates decide, each over the last hour when it had requests, else over
  24 hours: *ok* at the OK threshold or above (95 % by default), *warning* at the warning
  threshold or above (80 %), *error* below. Traffic and active probes are rated apart;
- an open circuit is an error, jobs stuck in the queue a warning;
- the worst part decides; the reason says which, in words.

No ORM here: the figures come from the hourly metric buckets, the probe history, the
breaker state and the job queue, read by the connector's ``health`` chapter.
"""

RANK = {"unknown": 0, "ok": 1, "warning": 2, "error": 3}


def rate_status(what, count_1h, rate_1h, count_24h, rate_24h, ok_threshold=95.0, warning_threshold=80.0):
    """``(status, reason)`` of a success rate: ``what`` names the counted things (requests, probes)."""
    if not count_24h:
        return "unknown", f"unknown: no {what.rstrip('s')} in the last 24 hours"
    if count_1h:
        count, rate, window = count_1h, rate_1h, "the last hour"
    else:
        count, rate, window = count_24h, rate_24h, "the last 24 hours"
    if rate >= ok_threshold:
        status, threshold = "ok", ok_threshold
    elif rate >= warning_threshold:
        status, threshold = "warning", ok_threshold
    else:
        status, threshold = "error", warning_threshold
    comparison = "at or above" if status == "ok" else "below"
    noun = what if count != 1 else what.rstrip("s")
    subject = "success" if what == "requests" else f"success of {what}"
    return status, (
        f"{status}: {percent(rate)} {subject} over {window} ({count} {noun}; "
        f"{comparison} the {percent(threshold)} threshold)"
    )


def traffic_status(calls_1h, rate_1h, calls_24h, rate_24h, ok_threshold=95.0, warning_threshold=80.0):
    """``(status, reason)`` of the traffic: status in unknown / ok / warning / error."""
    return rate_status("requests", calls_1h, rate_1h, calls_24h, rate_24h, ok_threshold, warning_threshold)


def probe_status(probes_1h, rate_1h, probes_24h, rate_24h, ok_threshold=95.0, warning_threshold=80.0):
    """``(status, reason)`` of the active health probes."""
    return rate_status("health probes", probes_1h, rate_1h, probes_24h, rate_24h, ok_threshold, warning_threshold)


def combine(parts):
    """The connector's ``(status, reason)`` from ``(status, reason)`` parts: the worst decides.

    Unknown parts count only when every part is unknown (no traffic and no probe). Where
    several parts share a warning or an error, their reasons are joined.
    """
    known = [part for part in parts if part[0] != "unknown"]
    if not known:
        missing = [reason.removeprefix("unknown: ") for _status, reason in parts]
        suffix = " in the last 24 hours"
        if missing and all(text.endswith(suffix) for text in missing):
            # "no request and no health probe in the last 24 hours"
            missing = [" and ".join(text.removesuffix(suffix) for text in missing) + suffix]
        return "unknown", "unknown: " + ("; ".join(missing) or "nothing recorded")
    worst = max(RANK[status] for status, _reason in known)
    status = next(status for status, rank in RANK.items() if rank == worst)
    reasons = [reason for part_status, reason in known if part_status == status]
    # What is wrong is said in full; what is fine, by its first witness (traffic before probes).
    return status, "; ".join(reasons if status != "ok" else reasons[:1])


def availability(hours):
    """Availability in % over observed hours, or None when no hour was observed.

    ``hours`` holds one down fraction (0..1) per observed hour: the share of failed probes
    of that hour when it had probes, else the share of its calls the remote failed (5xx,
    timeouts, refused connections). Hours nobody observed do not count either way.
    """
    fractions = [fraction for fraction in hours if fraction is not None]
    if not fractions:
        return None
    return 100.0 * (1.0 - sum(fractions) / len(fractions))


def percent(value):
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"
