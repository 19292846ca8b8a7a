"""Load generator for the webhook benchmark and the proofs under faults: plain Python, no Odoo.

POSTs signed Standard Webhooks deliveries (a new event id each) or GETs a URL from
several threads for a fixed time; prints one JSON line: status counts, latencies (ms),
elapsed seconds and the event ids answered 202.

    load_client.py URL [URL ...] --threads 4 --seconds 10 [--secret whsec_...] [--prefix run1]

Several URLs are used in turn (round-robin over the deliveries). As a real sender:

- ``--retry SECONDS``: a delivery answered 5xx, or not answered (connection refused or
  reset, timeout), is sent again (same id and body, new timestamp and signature) with
  backoff, until it is answered 2xx or 4xx or SECONDS have passed since the sending
  stopped; the JSON then also holds ``deliveries`` ({id: [status of each attempt]}) and
  ``answers`` ([[wall-clock start, ms, status]] of every attempt).
- ``--count N``: stop after N deliveries (instead of after ``--seconds``).
- ``--same-id ID``: every delivery is the same event (same id and body).
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import itertools
import json
import threading
import time
from urllib.parse import urlsplit

RETRY_BASE = 0.2  # seconds before the first retry, doubled on each (full jitter not needed here)
RETRY_CAP = 2.0


def sign(secret, msg_id, timestamp, body):
    # https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--secret")
    parser.add_argument("--prefix", default="evt")
    parser.add_argument("--retry", type=float, default=None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--same-id", default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    targets = [urlsplit(url) for url in args.urls]
    stop_at = time.monotonic() + (args.seconds if args.count is None else 10**9)
    lock = threading.Lock()
    latencies, statuses, accepted = [], {}, []
    deliveries, answers = {}, []
    counter = itertools.count()
    turns = itertools.count()

    def attempt(method, msg_id, body):
        parts = targets[next(turns) % len(targets)]
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=args.timeout)
        headers = {"Connection": "close"}
        if body is not None:
            timestamp = str(int(time.time()))
            headers.update(
                {
                    "Content-Type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": timestamp,
                    "webhook-signature": sign(args.secret, msg_id, timestamp, body),
                }
            )
        began = time.time()
        started = time.perf_counter()
        try:
            connection.request(method, parts.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except OSError as exc:  # refused, reset, timed out: no answer
            status = type(exc).__name__
        elapsed = (time.perf_counter() - started) * 1000
        connection.close()
        with lock:
            latencies.append(elapsed)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 202:
                accepted.append(msg_id)
            if args.retry is not None:
                answers.append([began, elapsed, status])
                if msg_id is not None:
                    deliveries.setdefault(msg_id, []).append(status)
        return status

    def run(_thread_no):
        while time.monotonic() < stop_at:
            method, msg_id, body = "GET", None, None
            if args.secret:
                with lock:
                    number = next(counter)
                if args.count is not None and number >= args.count:
                    return
                msg_id = args.same_id or f"{args.prefix}-{number}"
                data = {"id": args.same_id or number, "lines": [1, 2, 3]}
                body = json.dumps({"type": "order.created", "data": data}).encode()
                method = "POST"
            status = attempt(method, msg_id, body)
            if args.retry is None or msg_id is None:
                continue
            delay = RETRY_BASE
            give_up = (stop_at if args.count is None else time.monotonic()) + args.retry
            while not (isinstance(status, int) and status < 500) and time.monotonic() < give_up:
                time.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                status = attempt(method, msg_id, body)

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = {
        "elapsed": time.monotonic() - began,
        "statuses": statuses,
        "latencies": latencies,
        "accepted": accepted,
    }
    if args.retry is not None:
        result.update(deliveries=deliveries, answers=answers)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
