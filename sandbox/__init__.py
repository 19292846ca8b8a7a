"""A partner sandbox: plain-Python HTTP services that behave as the product's partner APIs
(numbers, headers, status codes, limits), for tests, benchmarks and the demo. The addon itself
imports only ``demo`` (the demo's shared values, for its demo data). Shapes:

- ``orders``: an e-commerce order API polled in time windows;
- ``retail``: a portal taking batches, answering 202 and a job to poll;
- ``datasharing``: an ERP data-sharing feed of numbered messages and a summary per batch.

Besides them: ``sender``, the demo's webhook sender, and ``webhook_senders``, how each
provider signs a delivery (the sender and the signature tests use it).

Run one from the repository root, e.g. ``python3 -m sandbox.orders --port 8099``;
``scripts/run`` starts them with the demo (see ``demo``).
"""
