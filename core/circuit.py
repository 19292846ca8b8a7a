"""Circuit breaker state machine (pure; persisted by ``integration.connector.state``).

closed --N consecutive retryable failures--> open --reset timeout--> half_open
half_open --probe succeeds--> closed;  half_open --probe fails--> open

While open, calls fail fast without any HTTP. In half-open exactly one call (the probe)
goes through; the others fail fast until it reports. A probe that never reports (its
worker died) is replaced after another reset timeout.
"""

from dataclasses import dataclass, replace

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class CircuitState:
    state: str = CLOSED
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None


@dataclass(frozen=True)
class Admission:
    allowed: bool
    state: CircuitState
    retry_in: float = 0.0  # when refused: seconds until a probe may be tried
    is_probe: bool = False


def admit(circuit, now, reset_timeout):
    """May a call go out now? Returns the decision and the state to store."""
    if circuit.state == CLOSED:
        return Admission(True, circuit)
    if circuit.state == OPEN:
        ready_at = (circuit.opened_at or now) + reset_timeout
        if now >= ready_at:
            return Admission(True, replace(circuit, state=HALF_OPEN, probe_at=now), is_probe=True)
        return Admission(False, circuit, retry_in=ready_at - now)
    # half-open: one probe at a time
    stale_at = (circuit.probe_at or now) + reset_timeout
    if now >= stale_at:
        return Admission(True, replace(circuit, probe_at=now), is_probe=True)
    return Admission(False, circuit, retry_in=stale_at - now)


def record(circuit, now, success, threshold, is_probe=False):
    """State after a call: ``success`` False only for failures that say the remote is down.

    Outcomes of calls admitted before the circuit opened arrive late: while open they only
    count, and while half-open only the probe decides.
    """
    if circuit.state == OPEN or (circuit.state == HALF_OPEN and not is_probe):
        return circuit if success else replace(circuit, failures=circuit.failures + 1)
    if success:
        return CircuitState()
    failures = circuit.failures + 1
    if circuit.state == HALF_OPEN or failures >= max(1, threshold):
        return CircuitState(OPEN, failures, opened_at=now)
    return replace(circuit, failures=failures)
