"""A partner sandbox: plain-Python HTTP services that behave as the product's partner APIs
(numbers, headers, status codes, limits), for tests, benchmarks and the demo. Nothing here
is imported by the addon itself. Shapes:

- ``orders``: an e-commerce order API polled in time windows;
- ``retail``: a portal taking batches, answering 202 and a job to poll;
- ``datasharing``: an ERP data-sharing feed of numbered messages and a summary per batch.

Run one from the repository root, e.g. ``python3 -m sandbox.orders --port 8099``.
"""
