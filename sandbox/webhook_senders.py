"""Webhook senders: the headers each provider would send for a raw body. The signature tests and
the demo sender (``sandbox/sender.py``) sign with them.

Written from each provider's public documentation, not from ``core/signatures.py``, so that the
tests check our verifier against the providers' schemes rather than against itself:

- Standard Webhooks: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
  ("Signature scheme" and "Webhook headers"), and Svix, which uses the same scheme:
  https://docs.svix.com/receiving/verifying-payloads/how-manual
- Stripe: https://docs.stripe.com/webhooks#verify-manually
- GitHub: https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
- Shopify: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries

Plain Python (standard library only), no Odoo imports. Bodies are bytes, timestamps integer unix seconds.
"""

import base64
import hashlib
import hmac
import time

STANDARD_WEBHOOKS_SECRET_PREFIX = "whsec_"


def _hmac_sha256(key, message):
    return hmac.new(key, message, hashlib.sha256).digest()


def _now(timestamp):
    return int(time.time()) if timestamp is None else int(timestamp)


def standard_webhooks_key(secret):
    """The HMAC key of a Standard Webhooks secret: the base64 after the ``whsec_`` prefix, decoded."""
    if secret.startswith(STANDARD_WEBHOOKS_SECRET_PREFIX):
        secret = secret[len(STANDARD_WEBHOOKS_SECRET_PREFIX) :]
    return base64.b64decode(secret)


def standard_webhooks_signature(secret, body, msg_id, timestamp):
    """One ``v1,<base64>`` entry: HMAC-SHA256 over ``{msg_id}.{timestamp}.{body}``."""
    signed = b"%s.%d.%s" % (msg_id.encode(), int(timestamp), body)
    return "v1," + base64.b64encode(_hmac_sha256(standard_webhooks_key(secret), signed)).decode()


def standard_webhooks_headers(secret, body, msg_id, timestamp=None):
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.

    ``secret`` may be a list of secrets (a sender during key rotation): the signature header is then
    the space-delimited list of one ``v1,`` entry per secret, in the order given.
    """
    timestamp = _now(timestamp)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard_webhooks_signature(s, body, msg_id, timestamp) for s in secrets),
    }


def stripe_signature(secret, body, timestamp):
    """Stripe's ``v1`` value: hex HMAC-SHA256 over ``{t}.{body}``, keyed with the secret string itself.

    The ``whsec_...`` endpoint secret is used as-is (utf-8), not base64-decoded as in Standard Webhooks.
    """
    signed = b"%d.%s" % (int(timestamp), body)
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def stripe_headers(secret, body, timestamp=None, extra_v1=(), v0=None):
    """``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...][,v0=<hex>]``.

    ``extra_v1`` are further ``v1`` values appended after the real one, in the order given (a bogus
    value, or the signature with a second secret). With ``secret=None`` only ``extra_v1`` are sent, so
    a test can put a bogus entry before the valid one. ``v0`` adds a ``v0=`` element, which Stripe
    documents as the test-mode scheme that receivers should ignore.
    """
    timestamp = _now(timestamp)
    elements = ["t=%d" % timestamp]
    if secret is not None:
        elements.append("v1=" + stripe_signature(secret, body, timestamp))
    elements.extend("v1=" + value for value in extra_v1)
    if v0 is not None:
        elements.append("v0=" + v0)
    return {"Stripe-Signature": ",".join(elements)}


def github_headers(secret, body, delivery_id, event):
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` plus the delivery and event headers."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": "sha256=" + digest,
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Event": event,
    }


def shopify_headers(secret, body, webhook_id, topic):
    """``X-Shopify-Hmac-SHA256: <base64 HMAC-SHA256 of the body>`` keyed with the app's client secret."""
    digest = base64.b64encode(_hmac_sha256(secret.encode(), body)).decode()
    return {
        "X-Shopify-Hmac-SHA256": digest,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": topic,
    }


def generic_hmac_headers(
    secret, body, header="X-Signature", encoding="hex", prefix="", timestamp_header=None, timestamp=None
):
    """A generic HMAC-SHA256 sender: ``<header>: <prefix><hex or base64 digest>``.

    The digest covers the body, or ``{timestamp}.{body}`` when ``timestamp_header`` is given; that
    header then carries the unix timestamp.
    """
    if encoding not in ("hex", "base64"):
        raise ValueError("encoding must be 'hex' or 'base64'")
    headers = {}
    message = body
    if timestamp_header:
        timestamp = _now(timestamp)
        message = b"%d.%s" % (timestamp, body)
        headers[timestamp_header] = str(timestamp)
    raw = _hmac_sha256(secret.encode(), message)
    digest = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
    headers[header] = prefix + digest
    return headers
