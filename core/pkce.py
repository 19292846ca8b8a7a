"""OAuth2 authorization code with PKCE (RFC 7636): verifier, S256 challenge, state.

The verifier stays on our side (encrypted, until the callback uses it once); only its
SHA-256 challenge travels through the browser. ``state`` is an unguessable nonce that
ties the provider's redirect back to the session and connector that asked for it; what
is stored is its hash, so a database reader cannot answer a pending authorization.
"""

import base64
import hashlib
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# RFC 7636 4.1: 43 to 128 characters. 64 random bytes give 86.
VERIFIER_BYTES = 64
STATE_BYTES = 32


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_verifier():
    """A fresh code verifier: 86 characters of the unreserved alphabet (RFC 7636 4.1)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge(verifier):
    """The S256 challenge of ``verifier``: BASE64URL(SHA256(ASCII(verifier))), unpadded."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def make_state():
    """A fresh, unguessable ``state`` value."""
    return secrets.token_urlsafe(STATE_BYTES)


def state_hash(state):
    """What is stored to recognise ``state`` when the provider sends it back."""
    return hashlib.sha256((state or "").encode("utf-8")).hexdigest()


def authorization_url(endpoint, client_id, redirect_uri, state, challenge, scope=None, extra_params=None):
    """The provider's authorization URL for a code grant with an S256 challenge.

    Parameters already in ``endpoint``'s query string are kept (some providers put a
    tenant or policy there); ``extra_params`` (e.g. Google's ``access_type=offline``)
    cannot replace the ones the flow depends on.
    """
    parts = urlsplit(endpoint)
    flow = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope:
        flow["scope"] = scope
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in flow]
    params += [(k, str(v)) for k, v in (extra_params or {}).items() if k not in flow]
    params += list(flow.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))
