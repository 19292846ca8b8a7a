"""A connector's health from its traffic, as the product's integration guide defines it.

- *unknown* without any request in the last 24 hours (a connector nobody calls is not
  healthy, and nothing says it is failing either);
- otherwise the success rate decides, over the last hour when it had requests, else over
  24 hours: *ok* at the OK threshold or above (95 % by default), *warning* at the warning
  threshold or above (80 %), *error* below.

No ORM here: the figures come from the hourly metric buckets the call path already fills.
"""

WINDOWS = (("1h", "the last hour"), ("24h", "the last 24 hours"))


def traffic_status(calls_1h, rate_1h, calls_24h, rate_24h, ok_threshold=95.0, warning_threshold=80.0):
    """``(status, reason)``: status in unknown / ok / warning / error, the reason in words."""
    if not calls_24h:
        return "unknown", "unknown: no request in the last 24 hours"
    if calls_1h:
        calls, rate, window = calls_1h, rate_1h, "the last hour"
    else:
        calls, rate, window = calls_24h, rate_24h, "the last 24 hours"
    if rate >= ok_threshold:
        status, threshold = "ok", ok_threshold
    elif rate >= warning_threshold:
        status, threshold = "warning", ok_threshold
    else:
        status, threshold = "error", warning_threshold
    comparison = "at or above" if status == "ok" else "below"
    return status, (
        f"{status}: {_percent(rate)} success over {window} ({calls} request{'s' if calls != 1 else ''}; "
        f"{comparison} the {_percent(threshold)} threshold)"
    )


def _percent(value):
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"
