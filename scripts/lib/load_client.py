"""Load generator for the webhook benchmark: plain Python, no Odoo.

POSTs signed Standard Webhooks deliveries (a new event id each) or GETs a URL from
several threads for a fixed time; prints one JSON line: status counts, latencies (ms),
elapsed seconds and the event ids answered 202.

    load_client.py URL --threads 4 --seconds 10 [--secret whsec_...] [--prefix run1]
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
from urllib.parse import urlsplit


def sign(secret, msg_id, timestamp, body):
    # https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--secret")
    parser.add_argument("--prefix", default="evt")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    stop_at = time.monotonic() + args.seconds
    lock = threading.Lock()
    latencies, statuses, accepted = [], {}, []
    counter = iter(range(10**9))

    def run(thread_no):
        while time.monotonic() < stop_at:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            headers = {"Connection": "close"}
            body = None
            method = "GET"
            if args.secret:
                with lock:
                    number = next(counter)
                msg_id = f"{args.prefix}-{number}"
                body = json.dumps({"type": "order.created", "data": {"id": number, "lines": [1, 2, 3]}}).encode()
                timestamp = str(int(time.time()))
                headers.update(
                    {
                        "Content-Type": "application/json",
                        "webhook-id": msg_id,
                        "webhook-timestamp": timestamp,
                        "webhook-signature": sign(args.secret, msg_id, timestamp, body),
                    }
                )
                method = "POST"
            started = time.perf_counter()
            try:
                connection.request(method, parts.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError as exc:
                status = type(exc).__name__
            elapsed = (time.perf_counter() - started) * 1000
            connection.close()
            with lock:
                latencies.append(elapsed)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 202:
                    accepted.append(msg_id)

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(
        json.dumps(
            {
                "elapsed": time.monotonic() - began,
                "statuses": statuses,
                "latencies": latencies,
                "accepted": accepted,
            }
        )
    )


if __name__ == "__main__":
    main()
