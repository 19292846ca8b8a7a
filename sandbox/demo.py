"""The living demo's shared values: what ``scripts/run`` starts, and what the addon's demo data
sets on the demo connectors so that they talk to it.

Read by the addon's demo data (``integration.connector._demo_setup``), by the sandboxes' command
lines and by the demo sender (``sandbox/sender.py``): one place, so that a secret changed here
changes on both sides. These are demo values, public by nature: they are set on the demo
connectors only, never by non-demo data, and they open nothing but sandboxes on 127.0.0.1.

Ports can be moved with environment variables (``scripts/run`` passes ``ORDERS_PORT``,
``RETAIL_PORT`` and ``DATASHARING_PORT`` on as ``IH_DEMO_<NAME>_PORT``), read on both sides.
"""

import os

# Sandboxes: default local ports (python3 -m sandbox.orders / .retail / .datasharing).
PORTS = {"orders": 8099, "retail": 8098, "datasharing": 8097}

# Credentials the sandboxes expect and the demo connectors send.
RETAIL_API_KEY = "sandbox-retail-key"
DATASHARING_CLIENT_ID = "sandbox-client"
DATASHARING_CLIENT_SECRET = "sandbox-secret"

# Webhook signing secrets of the two connectors the demo sender posts to, one profile each.
ORDERS_CONNECTOR = "wake-orders"  # Standard Webhooks: whsec_ + base64 of the key bytes
ORDERS_WEBHOOK_SECRET = "whsec_aW50ZWdyYXRpb25faHViIGRlbW8gb3JkZXJzIHdlYmhvb2tz"
PAYMENTS_CONNECTOR = "demo-payments"  # Stripe: the endpoint secret is used as is
PAYMENTS_WEBHOOK_SECRET = "whsec_demo_payments_3f9a1c7e52b04d8e"

# The order sandbox of the demo: a new order every NEW_ORDER_EVERY seconds, and one order call
# in ORDERS_FAIL_EVERY answered 503 (the health path excepted), so that its connector shows a
# warning: 90 to 95 % success from the tenth call on, between the default thresholds of 80 %
# (error below) and 95 % (OK). Evenly spread rather than drawn at random: a random share over
# the first few dozen calls could as well read OK or error.
NEW_ORDER_EVERY = 10.0
ORDERS_FAIL_EVERY = 10
ORDERS_FAIL_PATHS = ("/pedidos",)

# The retail sandbox of the demo was fed before (its last integration this many hours before it
# started): the portal answers the flow's first "latest integration" with a date, not a 404 that
# would count as a failed call, and the first export sends what changed since.
RETAIL_FED_HOURS_AGO = 24

# The demo sender announces one order this many publications ahead of the sandbox, once: the
# event fails (404, the order is not at the API yet) and its Retry works once the order is out.
EARLY_ANNOUNCEMENT_AHEAD = 6


def port(name):
    """The local port of sandbox ``name`` (orders, retail, datasharing)."""
    return int(os.environ.get(f"IH_DEMO_{name.upper()}_PORT") or PORTS[name])


def url(name):
    return f"http://127.0.0.1:{port(name)}"


# Set (to 1) by scripts/run, which starts the demo sender: only then does the demo data give
# the demo's webhook connectors their published secrets. A database installed with demo data
# anywhere else keeps them unset, and refuses deliveries signed with secrets anyone can read.
LIVE_VARIABLE = "IH_DEMO_LIVE"


def live():
    """Whether this process serves the living demo (``scripts/run``)."""
    return os.environ.get(LIVE_VARIABLE) == "1"
