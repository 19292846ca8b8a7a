"""Verification of inbound webhook signatures, on the raw bytes of the body.

One function, ``verify``, for every profile a connector can choose. It raises
``SignatureError`` with a short reason (safe to show the sender: never a secret, never
the expected signature) or returns what it learned (the signed timestamp).

Every profile compares in constant time and accepts any of the configured secrets (two
are active while a secret is rotated). With no secret configured every profile refuses,
except "none", which a connector only gets when an administrator chooses it.
"""

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

from .exceptions import SignatureError

PROFILES = ("standard_webhooks", "stripe", "github", "shopify", "hmac_sha256", "none")
DEFAULT_TOLERANCE = 300
# Signatures read from one header (senders list a few during their own key rotation).
MAX_SIGNATURES = 8

# Where each profile's senders put the event id and type. ``None``: not in a header
# (Stripe and Standard Webhooks put the type in the JSON body, Stripe the id too).
PROFILE_ID_HEADER = {
    "standard_webhooks": "webhook-id",
    "github": "X-GitHub-Delivery",
    "shopify": "X-Shopify-Webhook-Id",
}
PROFILE_ID_JSON_PATH = {"stripe": "id"}
PROFILE_TYPE_HEADER = {"github": "X-GitHub-Event", "shopify": "X-Shopify-Topic"}
PROFILE_TYPE_JSON_PATH = {"standard_webhooks": "type", "stripe": "type"}


@dataclass(frozen=True)
class GenericHmacOptions:
    """Settings of the generic HMAC-SHA256 profile.

    The signature is HMAC-SHA256(secret, body), or HMAC-SHA256(secret, "<timestamp>.<body>")
    when ``timestamp_header`` names a header carrying the Unix time of the delivery.
    """

    header: str = "X-Signature"
    encoding: str = "hex"  # or "base64"
    prefix: str = ""  # e.g. "sha256="
    timestamp_header: str = ""


@dataclass(frozen=True)
class Verified:
    timestamp: int | None = None


def get_header(headers, name):
    """Case-insensitive header lookup in a dict, a werkzeug ``Headers`` or any mapping."""
    value = headers.get(name)
    if value is None and hasattr(headers, "items"):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.strip() if isinstance(value, str) else None


def _required_header(headers, name):
    value = get_header(headers, name)
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def _hmac_sha256(key, message):
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_timestamp(raw, tolerance, now):
    try:
        timestamp = int(raw)
    except (TypeError, ValueError):
        raise SignatureError("the signature timestamp is not a Unix time in seconds") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        direction = "old" if timestamp < now else "far in the future"
        raise SignatureError(f"the signature timestamp is too {direction} (tolerance {tolerance} s)")
    return timestamp


def _matches(expected_digests, candidates):
    """Constant-time: does any candidate equal any expected digest? Every pair is compared."""
    found = False
    for expected in expected_digests:
        for candidate in candidates:
            found |= hmac.compare_digest(expected, candidate)
    return found


def _decode_base64(value):
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_hex(value):
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _standard_webhooks_keys(secrets):
    keys = [_decode_base64(secret.removeprefix("whsec_")) for secret in secrets]
    keys = [key for key in keys if key]
    if not keys:
        # A configuration problem, not the sender's: said without showing the secret.
        raise SignatureError("the configured Standard Webhooks secret is not whsec_ followed by base64")
    return keys


def _verify_standard_webhooks(body, headers, secrets, tolerance, now, options):
    # https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
    msg_id = _required_header(headers, "webhook-id")
    raw_timestamp = _required_header(headers, "webhook-timestamp")
    signature_header = _required_header(headers, "webhook-signature")
    timestamp = _check_timestamp(raw_timestamp, tolerance, now)
    content = msg_id.encode() + b"." + raw_timestamp.encode() + b"." + body
    candidates = []
    for entry in signature_header.split()[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version == "v1":
            decoded = _decode_base64(value)
            if decoded is not None:
                candidates.append(decoded)
    if not candidates:
        raise SignatureError("webhook-signature holds no v1 signature")
    expected = [_hmac_sha256(key, content) for key in _standard_webhooks_keys(secrets)]
    if not _matches(expected, candidates):
        raise SignatureError("no v1 signature matches")
    return Verified(timestamp)


def _verify_stripe(body, headers, secrets, tolerance, now, options):
    # https://docs.stripe.com/webhooks#verify-manually
    header = _required_header(headers, "Stripe-Signature")
    raw_timestamp = None
    candidates = []
    for item in header.split(",")[: MAX_SIGNATURES * 2]:
        key, _, value = item.strip().partition("=")
        if key == "t":
            raw_timestamp = value
        elif key == "v1":
            decoded = _decode_hex(value)
            if decoded is not None:
                candidates.append(decoded)
    if raw_timestamp is None:
        raise SignatureError("Stripe-Signature has no timestamp (t=)")
    if not candidates:
        raise SignatureError("Stripe-Signature holds no v1 signature")
    timestamp = _check_timestamp(raw_timestamp, tolerance, now)
    content = raw_timestamp.encode() + b"." + body
    expected = [_hmac_sha256(secret.encode(), content) for secret in secrets]
    if not _matches(expected, candidates):
        raise SignatureError("no v1 signature matches")
    return Verified(timestamp)


def _verify_github(body, headers, secrets, tolerance, now, options):
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    header = _required_header(headers, "X-Hub-Signature-256")
    if not header.startswith("sha256="):
        raise SignatureError("X-Hub-Signature-256 does not start with sha256=")
    candidate = _decode_hex(header.removeprefix("sha256="))
    if candidate is None:
        raise SignatureError("X-Hub-Signature-256 is not hexadecimal")
    expected = [_hmac_sha256(secret.encode(), body) for secret in secrets]
    if not _matches(expected, [candidate]):
        raise SignatureError("the signature does not match")
    return Verified()


def _verify_shopify(body, headers, secrets, tolerance, now, options):
    # https://shopify.dev/docs/apps/build/webhooks/verify-deliveries
    candidate = _decode_base64(_required_header(headers, "X-Shopify-Hmac-SHA256"))
    if candidate is None:
        raise SignatureError("X-Shopify-Hmac-SHA256 is not base64")
    expected = [_hmac_sha256(secret.encode(), body) for secret in secrets]
    if not _matches(expected, [candidate]):
        raise SignatureError("the signature does not match")
    return Verified()


def _verify_hmac_sha256(body, headers, secrets, tolerance, now, options):
    options = options or GenericHmacOptions()
    header = _required_header(headers, options.header)
    if options.prefix:
        if not header.startswith(options.prefix):
            raise SignatureError(f"{options.header} does not start with {options.prefix}")
        header = header[len(options.prefix) :]
    if options.encoding not in ("hex", "base64"):
        raise SignatureError(f"unknown signature encoding {options.encoding!r}")
    candidate = _decode_base64(header) if options.encoding == "base64" else _decode_hex(header)
    if candidate is None:
        raise SignatureError(f"{options.header} is not {'base64' if options.encoding == 'base64' else 'hexadecimal'}")
    timestamp = None
    content = body
    if options.timestamp_header:
        raw_timestamp = _required_header(headers, options.timestamp_header)
        timestamp = _check_timestamp(raw_timestamp, tolerance, now)
        content = raw_timestamp.encode() + b"." + body
    expected = [_hmac_sha256(secret.encode(), content) for secret in secrets]
    if not _matches(expected, [candidate]):
        raise SignatureError("the signature does not match")
    return Verified(timestamp)


_VERIFIERS = {
    "standard_webhooks": _verify_standard_webhooks,
    "stripe": _verify_stripe,
    "github": _verify_github,
    "shopify": _verify_shopify,
    "hmac_sha256": _verify_hmac_sha256,
}


def verify(profile, body, headers, secrets, *, tolerance=DEFAULT_TOLERANCE, now=None, options=None):
    """Check that ``body`` was signed by a holder of one of ``secrets``.

    :param profile: one of ``PROFILES``
    :param body: the raw request body (bytes), exactly as received
    :param headers: the request headers (looked up case-insensitively)
    :param secrets: the active secrets, current first (at most a couple)
    :param tolerance: seconds a signed timestamp may be away from now, either way
    :param options: ``GenericHmacOptions`` for the "hmac_sha256" profile
    :raises SignatureError: not authentic, or not verifiable
    """
    if profile == "none":
        return Verified()
    verifier = _VERIFIERS.get(profile)
    if verifier is None:
        raise SignatureError(f"unknown signature profile {profile!r}")
    if isinstance(secrets, str | bytes):
        # One secret passed bare would be split into one-character "secrets".
        raise TypeError("secrets must be a list of strings")
    secrets = [secret for secret in secrets or () if secret]
    if not secrets:
        raise SignatureError("no signing secret is configured for this webhook")
    return verifier(body, headers, secrets, tolerance, now, options)
