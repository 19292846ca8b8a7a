"""The e-commerce order API, as the product's documents describe it (PARTNERS.md, section 2).

- ``GET /pedidos?dataInicial=<ISO>&dataFinal=<ISO>&direcaoOrdenacao=ASC|DESC&pagina=N``: the
  orders changed in ``[dataInicial, dataFinal)``, 50 a page (``pagina`` from 1), the total in
  the ``x-total-count`` header; a page shorter than 50 is the last. The lowercase
  ``datainicial``/``datafinal`` of the documents' example are accepted too.
- Pages of 200 and beyond are refused (``400``: the documents do not give the status), so a
  window must hold fewer than 10,000 orders.
- ``GET /pedidos/<codigo>``: one order (the documents do not give this path).
- 120 requests a minute per token (the ``Authorization`` header): over it, ``429`` with
  ``retry-after`` seconds. Over 500 requests in one second, the token is blocked for an hour
  (``429``, ``retry-after: 3600``; the documents do not give that answer).
- With ``new_every`` seconds, a new order (the next number, changed now) appears that often,
  as in a shop that sells; ``orders`` in the stats is the number of orders so far.
- Stats count what a careless client does: ``pages_skipped`` (a page asked before the one
  before it was served, as after a 429 the documents' own example loop does) and
  ``deep_pages_refused``.
"""

import argparse
import threading
import time
from bisect import bisect_left
from datetime import datetime, timedelta, timezone

from . import demo
from .server import RateLimit, Reply, SandboxServer, add_fault_arguments, apply_fault_arguments

PAGE_SIZE = 50
PAGE_CAP = 200
RATE_PER_MINUTE = 120
BURST_PER_SECOND = 500
BLOCK_SECONDS = 3600


def _parse_time(text):
    moment = datetime.fromisoformat((text or "").replace("Z", "+00:00"))
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class OrdersSandbox(SandboxServer):
    """Orders spread evenly over ``[start, start + span)``, by their last change."""

    name = "orders"

    def __init__(
        self,
        port=0,
        orders=1000,
        start=None,
        span=timedelta(days=1),
        rate_per_minute=RATE_PER_MINUTE,
        seed=7,
        new_every=0.0,
    ):
        super().__init__(port=port, seed=seed)
        self.start_at = start or datetime(2026, 1, 1)
        self.span = span
        self.rate = RateLimit(rate_per_minute, 60.0)
        self.burst = RateLimit(BURST_PER_SECOND, 1.0)
        self.blocked_until = {}
        self.orders = [self._order(number, orders) for number in range(1, orders + 1)]
        self._index_orders()
        self._served = {}  # (token, window) -> pages served
        self._served_lock = threading.Lock()
        self.stats.update(pages_served=0, pages_skipped=0, deep_pages_refused=0, orders=orders)
        self.new_every = new_every
        self._initial = orders
        self._started = time.monotonic()
        self._grow_lock = threading.Lock()

    def _order(self, number, total):
        changed = self.start_at + self.span * (number - 1) / total
        return {
            "pedidoId": number,
            "codigo": f"P{number:07d}",
            "dataAtualizacao": _iso(changed),
            "cliente": {"nome": f"Cliente {number % 97}", "email": f"cliente{number % 97}@example.com"},
            "valorTotal": round(10 + (number * 37) % 990 + (number % 100) / 100, 2),
            "situacao": ("aberto", "pago", "enviado", "entregue")[number % 4],
        }

    def set_order(self, number, **changes):
        """Change an order (and its last-change time), as a shop would."""
        self.orders[number - 1].update(changes)
        self._index_orders()

    def _grow(self):
        """Add the orders that ``new_every`` says have appeared since the start, changed now."""
        if not self.new_every:
            return
        due = self._initial + int((time.monotonic() - self._started) / self.new_every)
        with self._grow_lock:
            if due <= len(self.orders):
                return
            now = _iso(datetime.now(timezone.utc).replace(tzinfo=None))
            for number in range(len(self.orders) + 1, due + 1):
                self.orders.append(dict(self._order(number, number), dataAtualizacao=now))
            self._index_orders()
            self.stats["orders"] = len(self.orders)

    def _dispatch(self, method, raw_path, headers, body):
        self._grow()
        return super()._dispatch(method, raw_path, headers, body)

    def _index_orders(self):
        # Orders sorted by last change, times parsed once: a window is two bisections, so
        # that the sandbox costs a benchmark little beside the client it measures.
        self._by_change = sorted(
            self.orders, key=lambda order: (_parse_time(order["dataAtualizacao"]), order["pedidoId"])
        )
        self._changed = [_parse_time(order["dataAtualizacao"]) for order in self._by_change]

    def route(self, method, path, query, headers, body):
        token = headers.get("Authorization") or "anonymous"
        refused = self._admit(token)
        if refused:
            return refused
        if method != "GET":
            return Reply(405, {"error": "method_not_allowed"})
        if path == "/pedidos":
            return self._list(token, query)
        if path.startswith("/pedidos/"):
            number = path.rsplit("/", 1)[-1]
            found = [o for o in self.orders if str(o["pedidoId"]) == number or o["codigo"] == number]
            return Reply(200, found[0]) if found else Reply(404, {"error": "not_found"})
        return Reply(404, {"error": "not_found"})

    def _admit(self, token):
        if self.blocked_until.get(token, 0) > _now():
            return Reply(
                429, {"error": "blocked", "message": "token blocked for an hour"}, {"retry-after": BLOCK_SECONDS}
            )
        if self.burst.hit(token) is not None:
            self.blocked_until[token] = _now() + BLOCK_SECONDS
            self.count("tokens_blocked")
            return Reply(
                429, {"error": "blocked", "message": "token blocked for an hour"}, {"retry-after": BLOCK_SECONDS}
            )
        wait = self.rate.hit(token)
        if wait is not None:
            return Reply(429, {"error": "too_many_requests"}, {"retry-after": wait})
        return None

    def _list(self, token, query):
        try:
            start = _parse_time(query.get("dataInicial") or query.get("datainicial"))
            end = _parse_time(query.get("dataFinal") or query.get("datafinal"))
            page = int(query.get("pagina") or 1)
        except ValueError as exc:
            return Reply(400, {"error": "bad_request", "message": str(exc)})
        if page < 1:
            return Reply(400, {"error": "bad_request", "message": "pagina starts at 1"})
        if page >= PAGE_CAP:
            self.count("deep_pages_refused")
            return Reply(400, {"error": "deep_pagination", "message": f"pages from {PAGE_CAP} on are refused"})
        matching = self._by_change[bisect_left(self._changed, start) : bisect_left(self._changed, end)]
        if (query.get("direcaoOrdenacao") or "ASC").upper() == "DESC":
            matching.reverse()
        window = (
            token,
            query.get("dataInicial") or query.get("datainicial"),
            query.get("dataFinal") or query.get("datafinal"),
        )
        with self._served_lock:
            served = self._served.setdefault(window, set())
            if page > 1 and page - 1 not in served:
                self.count("pages_skipped")
            served.add(page)
        self.count("pages_served")
        rows = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return Reply(200, rows, {"x-total-count": len(matching)})


def _now():
    return time.monotonic()


def main():
    parser = argparse.ArgumentParser(description="The order API sandbox, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=demo.PORTS["orders"])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=RATE_PER_MINUTE, help="requests a minute per token (0: no limit)")
    parser.add_argument("--hours", type=float, default=24.0, help="the orders' changes spread over this many hours")
    parser.add_argument(
        "--start",
        type=_parse_time,
        help="UTC time of the first change, e.g. 2026-01-01T00:00:00Z (default: --hours before now, so that a "
        "flow starting a day back, as the demo's does, finds every order)",
    )
    parser.add_argument("--new-every", type=float, default=0.0, help="seconds between two new orders (0: none)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="as scripts/run's demo wants it (sandbox/demo.py): new orders, and one order call in ten answered 503",
    )
    add_fault_arguments(parser)
    args = parser.parse_args()
    if args.demo:
        args.new_every = args.new_every or demo.NEW_ORDER_EVERY
        args.fail_every = args.fail_every or demo.ORDERS_FAIL_EVERY
        args.fail_path = args.fail_path or list(demo.ORDERS_FAIL_PATHS)
    span = timedelta(hours=args.hours)
    start = args.start or (datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - span)
    sandbox = OrdersSandbox(
        port=args.port,
        orders=args.orders,
        start=start,
        span=span,
        rate_per_minute=args.rate,
        new_every=args.new_every,
    )
    apply_fault_arguments(sandbox, args).serve()


if __name__ == "__main__":
    main()
