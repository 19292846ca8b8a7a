"""The demo's webhook sender: posts signed deliveries to Odoo's webhook routes, as partners do.

- Two connectors, two signature profiles (``sandbox/demo.py`` holds the secrets): the order
  API's announcements on ``wake-orders`` signed as Standard Webhooks (``pedido.novo.indexado``
  for each order the order sandbox publishes, ``pedido.indexado`` for orders that changed), and
  payment-provider events on ``demo-payments`` signed as Stripe (``customer.created`` /
  ``customer.updated`` of business customers, ``invoice.paid`` that nobody handles).
- About one event a second (``--interval``); some deliveries are sent twice with the same id,
  as senders do when they are unsure an answer arrived (Odoo answers 200 *duplicate*).
- A 5xx answer or a connection error is retried with exponential backoff (1 s doubling to
  60 s, same id, signed again with a fresh timestamp), up to 8 attempts; a 4xx is logged and
  dropped, as real senders mark a delivery failed.
- Waits for Odoo to answer ``/web/health`` before the first delivery.
- Once, it announces an order a few publications before the order sandbox serves it (a
  webhook racing ahead of the partner's API): that event fails with a 404, and its Retry
  works once the order is out (``EARLY_ANNOUNCEMENT_AHEAD`` x ``NEW_ORDER_EVERY`` seconds).

Run from the repository root: ``python3 -m sandbox.sender --odoo http://localhost:8069``.
Standard library only.
"""

import argparse
import copy
import heapq
import itertools
import json
import random
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from . import demo
from .webhook_senders import standard_webhooks_headers, stripe_headers

MAX_ATTEMPTS = 8
BACKOFF_CAP = 60.0
DUPLICATE_SHARE = 0.1
CUSTOMERS = [
    f"{first} {second}"
    for first in ("Northwind", "Blue Harbor", "Granite", "Sunfield", "Old Mill")
    for second in ("Traders", "Supplies", "Foods", "Outfitters")
]


class Delivery:
    """One event to deliver (its id is kept across attempts)."""

    def __init__(self, connector, event_id, event_type, document):
        self.connector = connector
        self.event_id = event_id
        self.event_type = event_type
        self.body = json.dumps(document, separators=(",", ":")).encode()
        self.attempts = 0

    def headers(self):
        """The connector's signature, made now (a retry is signed again, with a new timestamp)."""
        if self.connector == demo.ORDERS_CONNECTOR:
            signed = standard_webhooks_headers(demo.ORDERS_WEBHOOK_SECRET, self.body, self.event_id)
        else:
            signed = stripe_headers(demo.PAYMENTS_WEBHOOK_SECRET, self.body)
        return dict(signed, **{"Content-Type": "application/json", "User-Agent": "integration-hub-demo-sender/1"})


class Sender:
    def __init__(self, odoo, orders_url, interval, seed=11, out=sys.stdout):
        self.odoo = odoo.rstrip("/")
        self.orders_url = orders_url.rstrip("/")
        self.interval = interval
        self.random = random.Random(seed)
        self.out = out
        self.numbers = itertools.count(1)
        self.pending = []  # heap of (due, sequence, delivery)
        self.counts = {"sent": 0, "accepted": 0, "duplicate": 0, "retried": 0, "dropped": 0}
        self.known_orders = None
        self.customers_created = set()
        self.early_announced = False

    def log(self, message):
        stamp = datetime.now().strftime("%H:%M:%S")
        self.out.write(f"{stamp} {message}\n")
        self.out.flush()

    # Events ------------------------------------------------------------------------------

    def _event_id(self, prefix):
        return f"{prefix}_{int(time.time())}_{next(self.numbers)}"

    def order_event(self, event_type, number):
        event_id = self._event_id("wake")
        document = {"id": event_id, "type": event_type, "pedidoId": number, "sentAt": _iso_now()}
        return Delivery(demo.ORDERS_CONNECTOR, event_id, event_type, document)

    def payment_event(self):
        if self.random.random() < 0.15:
            event_type, obj = "invoice.paid", {"id": f"in_{next(self.numbers)}", "object": "invoice"}
        else:
            index = self.random.randrange(len(CUSTOMERS))
            event_type = "customer.updated" if index in self.customers_created else "customer.created"
            self.customers_created.add(index)
            obj = {
                "id": f"cus_demo{index:03d}",
                "object": "customer",
                "name": CUSTOMERS[index],
                "email": f"billing@{CUSTOMERS[index].lower().replace(' ', '-')}.example.com",
                "metadata": {"company": "true"},
            }
        event_id = self._event_id("evt")
        document = {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
        return Delivery(demo.PAYMENTS_CONNECTOR, event_id, event_type, document)

    def next_events(self):
        """This tick's events: the orders published since the last tick, else one event."""
        events = []
        published = self._published_orders()
        if published is not None:
            if self.known_orders is None:
                self.known_orders = published
            if not self.early_announced and published > self.known_orders:
                # Once: an order announced before the order API serves it (see the docstring).
                ahead = published + demo.EARLY_ANNOUNCEMENT_AHEAD
                self.early_announced = True
                self.log(f"announcing order {ahead} before the order API has it (its event fails; Retry works later)")
                events.append(self.order_event("pedido.novo.indexado", ahead))
            for number in range(self.known_orders + 1, published + 1):
                events.append(self.order_event("pedido.novo.indexado", number))
            self.known_orders = max(self.known_orders, published)
        if not events:
            if self.known_orders and self.random.random() < 0.4:
                events.append(self.order_event("pedido.indexado", self.random.randint(1, self.known_orders)))
            else:
                events.append(self.payment_event())
        return events

    def _published_orders(self):
        try:
            with urllib.request.urlopen(f"{self.orders_url}/_sandbox/stats", timeout=5) as response:
                return int(json.loads(response.read()).get("orders") or 0) or None
        except (OSError, ValueError):
            return None

    # Delivery ----------------------------------------------------------------------------

    def schedule(self, delivery, delay=0.0):
        heapq.heappush(self.pending, (time.monotonic() + delay, next(self.numbers), delivery))

    def deliver(self, delivery):
        delivery.attempts += 1
        self.counts["sent"] += 1
        url = f"{self.odoo}/integration/webhook/{delivery.connector}"
        request = urllib.request.Request(url, data=delivery.body, headers=delivery.headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status, reason = None, exc
        what = f"{delivery.connector} {delivery.event_type} {delivery.event_id}"
        if status in (200, 202):
            self.counts["accepted" if status == 202 else "duplicate"] += 1
            if status == 200:
                self.log(f"{status} duplicate {what}")
            return
        if (status is None or status >= 500) and delivery.attempts < MAX_ATTEMPTS:
            delay = min(BACKOFF_CAP, 2.0 ** (delivery.attempts - 1))
            self.counts["retried"] += 1
            self.log(f"{status or reason} {what}: attempt {delivery.attempts}, again in {delay:g} s")
            self.schedule(delivery, delay)
            return
        self.counts["dropped"] += 1
        self.log(f"{status or reason} {what}: dropped after {delivery.attempts} attempt(s)")

    def wait_for_odoo(self, timeout=600):
        deadline = time.monotonic() + timeout
        self.log(f"waiting for Odoo at {self.odoo}")
        while time.monotonic() < deadline:
            if _answers(f"{self.odoo}/web/health"):
                self.log("Odoo answers: sending")
                return True
            time.sleep(1)
        self.log("Odoo did not answer")
        return False

    def run(self, seconds=None):
        if not self.wait_for_odoo():
            return 1
        started = last_report = time.monotonic()
        next_tick = started
        while seconds is None or time.monotonic() - started < seconds:
            now = time.monotonic()
            if now >= next_tick:
                for delivery in self.next_events():
                    self.schedule(delivery)
                    if self.random.random() < DUPLICATE_SHARE:
                        self.schedule(copy.copy(delivery), self.random.uniform(0.5, 3.0))
                next_tick = now + self.interval
            while self.pending and self.pending[0][0] <= time.monotonic():
                self.deliver(heapq.heappop(self.pending)[2])
            if now - last_report >= 30:
                self.log("so far: " + ", ".join(f"{value} {key}" for key, value in self.counts.items()))
                last_report = now
            time.sleep(max(0.05, min(next_tick, self.pending[0][0] if self.pending else next_tick) - time.monotonic()))
        return 0


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False  # not up yet: asked again


def _iso_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    parser = argparse.ArgumentParser(description="The demo's webhook sender (to Odoo's webhook routes).")
    parser.add_argument("--odoo", default="http://localhost:8069", help="Odoo's base URL")
    parser.add_argument("--orders", default=None, help="the order sandbox's URL (default: its demo port)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two events")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: never)")
    args = parser.parse_args()
    sender = Sender(args.odoo, args.orders or demo.url("orders"), args.interval)
    sys.exit(sender.run(args.seconds))


if __name__ == "__main__":
    main()
