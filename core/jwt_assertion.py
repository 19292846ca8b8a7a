"""Signed JWT assertions (RFC 7519 / 7515 compact form) for JWT bearer authentication.

Built on ``cryptography`` directly (already a dependency for the secrets at rest), so
no JWT library is needed: HS256 with a shared secret, RS256 (PKCS#1 v1.5, RSA of at
least 2048 bits, RFC 7518 3.3) and ES256 (P-256, the signature as the 64-byte R || S
of RFC 7518 3.4, not DER). Used as the bearer credential of each call, or as the
``assertion`` of an RFC 7523 ``jwt-bearer`` grant at a token endpoint.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .exceptions import AssertionKeyError

ALGORITHMS = ("HS256", "RS256", "ES256")
# Claims the assertion sets itself; extra claims may not replace them.
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti"})
MIN_RSA_BITS = 2048
# The lifetime bounds a partner is likely to accept (Google: at most one hour).
MIN_LIFETIME, MAX_LIFETIME = 30, 3600

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def normalize_pem(text):
    """PEM text as ``cryptography`` wants it, whatever pasting did to its line breaks.

    A one-line input field drops the newlines of a pasted key, and a JSON key file
    (Google service accounts) holds them as ``\\n``: the base64 body is re-wrapped.
    """
    text = (text or "").replace("\\n", "\n").strip()
    match = _PEM.search(text)
    if not match:
        raise AssertionKeyError("the private key is not in PEM form (-----BEGIN ... PRIVATE KEY-----)")
    label, body = match.group(1), re.sub(r"\s+", "", match.group(2))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def load_signing_key(algorithm, key_text):
    """The key object ``sign`` uses: bytes for HS256, a private key for RS256/ES256.

    :raises AssertionKeyError: unknown algorithm, unreadable key, or a key that does not
        fit the algorithm; the message never contains the key
    """
    if algorithm not in ALGORITHMS:
        raise AssertionKeyError(f"unsupported JWT algorithm {algorithm!r} (use one of {', '.join(ALGORITHMS)})")
    if not key_text:
        raise AssertionKeyError("no signing key")
    if algorithm == "HS256":
        return key_text.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(normalize_pem(key_text).encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography's message may quote the key material: say what is wrong instead.
        raise AssertionKeyError("the private key cannot be read (an unencrypted PEM private key is expected)") from None
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise AssertionKeyError("RS256 needs an RSA private key")
        if key.key_size < MIN_RSA_BITS:
            raise AssertionKeyError(f"RS256 needs an RSA key of at least {MIN_RSA_BITS} bits, not {key.key_size}")
    elif not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AssertionKeyError("ES256 needs an EC private key on the P-256 curve")
    return key


def sign(signing_input, algorithm, key):
    """The JWS signature of ``signing_input`` (bytes) with a key from ``load_signing_key``."""
    if algorithm == "HS256":
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if algorithm == "RS256":
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if algorithm == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise AssertionKeyError(f"unsupported JWT algorithm {algorithm!r}")


def check_extra_claims(extra):
    """``extra`` as a dict; ValueError (saying what is wrong) when it cannot be used."""
    if not extra:
        return {}
    if not isinstance(extra, dict):
        raise ValueError("extra claims must be a JSON object")
    reserved = sorted(RESERVED_CLAIMS & set(extra))
    if reserved:
        raise ValueError(f"extra claims cannot set {', '.join(reserved)}: they have fields of their own")
    return extra


def build_claims(issuer=None, subject=None, audience=None, lifetime=300, extra=None, now=None):
    """The claim set of one assertion: ``iat``, ``exp`` and a unique ``jti`` included."""
    issued_at = int(now if now is not None else time.time())
    claims = dict(check_extra_claims(extra))
    for name, value in (("iss", issuer), ("sub", subject), ("aud", audience)):
        if value:
            claims[name] = value
    claims.update(iat=issued_at, exp=issued_at + int(lifetime), jti=uuid.uuid4().hex)
    return claims


def encode(claims, algorithm, key, key_id=None):
    """The compact JWS ``header.payload.signature`` of ``claims``."""
    header = {"alg": algorithm, "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    segments = [
        b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode("utf-8")) for part in (header, claims)
    ]
    signing_input = ".".join(segments).encode("ascii")
    return f"{segments[0]}.{segments[1]}.{b64url(sign(signing_input, algorithm, key))}"
