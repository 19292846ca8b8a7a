"""The Prometheus text exposition format (version 0.0.4), written without a client library.

The metrics route renders families it computed from a few aggregate queries; nothing is
registered or kept between scrapes, so the addon needs no process-wide registry (which
prefork workers would each hold a copy of). Tests parse the output with
``prometheus_client``'s own parser.
"""

import math
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TYPES = ("counter", "gauge", "histogram")


def escape_label_value(value):
    """A label value between double quotes: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text):
    """HELP text: backslash and newline escaped (double quotes stay as they are)."""
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_bound(bound):
    """An ``le`` label value: ``+Inf`` or a float written the way Prometheus clients write it."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items()) + "}"


@dataclass
class Family:
    """One metric family: its name (a counter's without ``_total``), help, type and samples.

    ``samples`` holds ``(labels dict, value)`` for counters and gauges; for a histogram,
    ``(labels dict, bucket counts, sum)`` with one count per bound of ``bounds`` plus the
    open-ended last one (not cumulative: the renderer accumulates).
    """

    name: str
    help: str
    type: str
    samples: list = field(default_factory=list)
    bounds: tuple = ()

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(self.type)
        if self.type == "counter" and self.name.endswith("_total"):
            raise ValueError("name a counter without _total: the renderer adds it")

    def add(self, labels, *value):
        self.samples.append((labels, *value))
        return self

    def render(self):
        # The 0.0.4 text format names a counter with its suffix in HELP and TYPE as well (only
        # OpenMetrics drops it there); parsers then report the family without it.
        name = f"{self.name}_total" if self.type == "counter" else self.name
        lines = [f"# HELP {name} {escape_help(self.help)}", f"# TYPE {name} {self.type}"]
        if self.type == "histogram":
            for labels, counts, total in self.samples:
                if len(counts) != len(self.bounds) + 1:
                    raise ValueError(f"{self.name}: {len(counts)} counts for {len(self.bounds)} bounds")
                running = 0
                for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                    running += count
                    lines.append(f"{self.name}_bucket{_labels({**labels, 'le': format_bound(bound)})} {running}")
                lines.append(f"{self.name}_sum{_labels(labels)} {format_value(total)}")
                lines.append(f"{self.name}_count{_labels(labels)} {running}")
        else:
            for labels, value in self.samples:
                lines.append(f"{name}{_labels(labels)} {format_value(value)}")
        return "\n".join(lines)


def render(families):
    """The exposition of ``families``, in the order given, ending with a newline."""
    return "".join(family.render() + "\n" for family in families)
