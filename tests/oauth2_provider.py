"""A local OAuth2 authorization server and protected API, for tests (127.0.0.1 only).

``OAuth2Provider`` answers, on one threaded HTTP server (``LocalServer``):

- ``GET /authorize``: the authorization endpoint of the code grant. It checks the
  client, redirect URI and S256 code challenge, then approves at once (no login page)
  and redirects the browser to ``redirect_uri?code=...&state=...``; with ``deny`` set it
  redirects with ``error=access_denied`` instead, as a user refusing consent would.
- ``POST /token``: grants ``authorization_code`` (the PKCE verifier is checked against
  the challenge, codes are single use and expire after ``code_lifetime`` seconds),
  ``refresh_token`` (rotated: each use returns a new refresh token and retires the old
  one; ``refuse_refresh`` answers ``invalid_grant``), ``urn:ietf:params:oauth:grant-type:
  jwt-bearer`` (RFC 7523: the assertion's signature and claims are verified) and
  ``client_credentials``.
- ``/api/...``: the protected resource. ``resource_auth`` says what it accepts: access
  tokens this provider issued and that are neither expired nor revoked (``"token"``),
  a signed JWT verified like a grant's assertion (``"jwt"``), or a key and secret pair
  of headers (``"key_pair"``). Anything else gets 401.

Its verification is written here from the RFCs with ``cryptography`` primitives, apart
from the addon's own code, so that a test passing means a real server would agree.
Time comes from ``time.time()`` (frozen clocks in tests apply to it too).
"""

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from urllib.parse import unquote_plus, urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..const import JWT_BEARER_GRANT
from .common import LocalServer, Reply


class JWTRejected(Exception):
    """Why an assertion was refused."""


def _b64decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_jwt(token, algorithm, key, expected=None, now=None):
    """Claims of ``token`` once its signature, algorithm, times and ``expected`` claims check out.

    :param key: the shared secret (bytes) for HS256, the public key for RS256 / ES256
    :param expected: claim values that must match, e.g. ``{"iss": ..., "aud": ...}``
    :raises JWTRejected: saying what is wrong
    """
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except ValueError as exc:
        raise JWTRejected(f"malformed JWT: {exc}") from None
    if header.get("alg") != algorithm:
        raise JWTRejected(f"alg {header.get('alg')!r}, expected {algorithm}")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    try:
        if algorithm == "HS256":
            if not hmac.compare_digest(hmac.new(key, signing_input, hashlib.sha256).digest(), signature):
                raise JWTRejected("bad signature")
        elif algorithm == "RS256":
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif algorithm == "ES256":
            if len(signature) != 64:
                raise JWTRejected("ES256 signature is not 64 bytes (R || S)")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            raise JWTRejected(f"unsupported alg {algorithm}")
    except JWTRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - cryptography's InvalidSignature and friends
        raise JWTRejected(f"bad signature ({type(exc).__name__})") from None
    now = time.time() if now is None else now
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise JWTRejected("expired")
    if not isinstance(claims.get("iat"), int) or claims["iat"] > now + 5:
        raise JWTRejected("issued in the future")
    if not claims.get("jti"):
        raise JWTRejected("no jti")
    for name, value in (expected or {}).items():
        if claims.get(name) != value:
            raise JWTRejected(f"{name} is {claims.get(name)!r}, expected {value!r}")
    return claims


def rsa_key_pair(bits=2048):
    """(private key PEM text, public key object) for RS256 tests."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _pem(key), key.public_key()


def ec_key_pair(curve=None):
    """(private key PEM text, public key object) for ES256 tests."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return _pem(key), key.public_key()


def _pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


class OAuth2Provider:
    """See the module docstring. Switches may be changed between requests."""

    def __init__(self, client_id="odoo-client", client_secret="provider-client-secret-7Qx", access_lifetime=3600):
        self.client_id = client_id
        self.client_secret = client_secret  # None: a public client (PKCE only)
        self.access_lifetime = access_lifetime
        self.code_lifetime = 60
        self.rotate_refresh = True
        # Switches
        self.deny = False
        self.refuse_refresh = False
        self.resource_auth = "token"
        # JWT verification (resource_auth "jwt" and the jwt-bearer grant)
        self.jwt_algorithm = None
        self.jwt_key = None
        self.jwt_claims = {}  # expected iss / sub / aud
        self.jwt_unique_jti = False  # refuse an assertion whose jti was seen before
        # Key + secret pair (resource_auth "key_pair"): ((header, value), (header, value))
        self.key_pair = ()
        # State, inspected by tests
        self.codes = {}
        self.access_tokens = {}  # token -> expiry (epoch seconds)
        self.revoked = set()
        self.refresh_tokens = {}  # token -> still valid
        self.grants = []  # grant types served, in order
        self.assertions = []  # JWTs accepted, in order (grant or resource)
        self._lock = threading.Lock()
        self._counter = 0
        self.server = LocalServer(self._respond)

    # Plumbing

    @property
    def url(self):
        return self.server.url

    @property
    def received(self):
        return self.server.received

    def requests_to(self, path):
        return self.server.requests_to(path)

    def stop(self):
        self.server.stop()

    def _next(self, prefix):
        with self._lock:
            self._counter += 1
            return f"{prefix}-{self._counter}-{secrets.token_urlsafe(12)}"

    def revoke_access_tokens(self):
        """Refuse every access token issued so far (the API then answers 401)."""
        self.revoked.update(self.access_tokens)

    @property
    def issued_access_tokens(self):
        return list(self.access_tokens)

    @property
    def valid_refresh_tokens(self):
        return [token for token, valid in self.refresh_tokens.items() if valid]

    def _respond(self, request):
        if request.path == "/authorize" and request.method == "GET":
            return self._authorize(request.query)
        if request.path == "/token" and request.method == "POST":
            return self._token(request)
        if request.path.startswith("/api/"):
            return self._resource(request)
        return Reply(404, {"error": "not_found"})

    # Authorization endpoint

    def _authorize(self, query):
        redirect_uri = query.get("redirect_uri")
        if query.get("client_id") != self.client_id or not redirect_uri:
            # RFC 6749 4.1.2.1: never redirect to an unverified URI.
            return Reply(400, {"error": "invalid_request", "error_description": "unknown client or redirect_uri"})
        state = query.get("state")
        problem = None
        if query.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problem = "invalid_request"
        elif self.deny:
            problem = "access_denied"
        if problem:
            return self._redirect(redirect_uri, error=problem, error_description="The user denied access", state=state)
        code = self._next("code")
        self.codes[code] = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "challenge": query["code_challenge"],
            "scope": query.get("scope"),
            "expires": time.time() + self.code_lifetime,
            "used": False,
        }
        return self._redirect(redirect_uri, code=code, state=state)

    @staticmethod
    def _redirect(uri, **params):
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return Reply(302, "", {"Location": f"{uri}{'&' if '?' in uri else '?'}{query}"})

    # Token endpoint

    def _client_ok(self, request, form):
        scheme, _sep, value = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            client_id, _sep, secret = base64.b64decode(value).decode().partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        else:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if self.client_secret is None:
            return client_id == self.client_id
        return client_id == self.client_id and secret == self.client_secret

    def _token(self, request):
        form = request.form()
        grant = form.get("grant_type")
        if grant == JWT_BEARER_GRANT:
            # RFC 7523: the assertion authenticates; no client secret is needed.
            try:
                claims = self._verify_assertion(form.get("assertion") or "")
            except JWTRejected as exc:
                return Reply(400, {"error": "invalid_grant", "error_description": f"assertion refused: {exc}"})
            self.grants.append(grant)
            return Reply(200, self._issue(scope=claims.get("scope") or form.get("scope")))
        if not self._client_ok(request, form):
            return Reply(401, {"error": "invalid_client", "error_description": "client authentication failed"})
        if grant == "authorization_code":
            return self._grant_code(form)
        if grant == "refresh_token":
            return self._grant_refresh(form)
        if grant == "client_credentials":
            self.grants.append(grant)
            return Reply(200, self._issue(scope=form.get("scope")))
        return Reply(400, {"error": "unsupported_grant_type"})

    def _grant_code(self, form):
        entry = self.codes.get(form.get("code") or "")
        if entry is None or entry["used"]:
            return Reply(400, {"error": "invalid_grant", "error_description": "unknown or used authorization code"})
        entry["used"] = True
        if time.time() > entry["expires"]:
            # Quoting what it was sent, as some providers do: the client must not log it.
            quoted = f"authorization code expired: {form.get('code')} (verifier {form.get('code_verifier')})"
            return Reply(400, {"error": "invalid_grant", "error_description": quoted})
        if form.get("redirect_uri") != entry["redirect_uri"]:
            return Reply(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
        verifier = form.get("code_verifier") or ""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(challenge, entry["challenge"]):
            return Reply(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        self.grants.append("authorization_code")
        return Reply(200, self._issue(scope=entry["scope"], refresh=True))

    def _grant_refresh(self, form):
        token = form.get("refresh_token") or ""
        if self.refuse_refresh or not self.refresh_tokens.get(token):
            return Reply(400, {"error": "invalid_grant", "error_description": "refresh token expired or revoked"})
        if self.rotate_refresh:
            self.refresh_tokens[token] = False
        self.grants.append("refresh_token")
        return Reply(200, self._issue(refresh=self.rotate_refresh))

    def _issue(self, scope=None, refresh=False):
        token = self._next("access")
        self.access_tokens[token] = time.time() + self.access_lifetime
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.access_lifetime}
        if scope:
            body["scope"] = scope
        if refresh:
            body["refresh_token"] = self._next("refresh")
            self.refresh_tokens[body["refresh_token"]] = True
        return body

    def _verify_assertion(self, token):
        claims = verify_jwt(token, self.jwt_algorithm, self.jwt_key, self.jwt_claims)
        with self._lock:
            if self.jwt_unique_jti and any(seen["jti"] == claims["jti"] for _t, seen in self.assertions):
                raise JWTRejected("jti replayed")
            self.assertions.append((token, claims))
        return claims

    # Protected resource

    def _resource(self, request):
        if self.resource_auth == "key_pair":
            if self.key_pair and all(request.headers.get(name) == value for name, value in self.key_pair):
                return Reply(200, {"ok": True})
            return Reply(401, {"error": "invalid_key"})
        scheme, _sep, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not credential:
            return Reply(401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if self.resource_auth == "jwt":
            try:
                claims = self._verify_assertion(credential)
            except JWTRejected as exc:
                return Reply(401, {"error": "invalid_token", "error_description": str(exc)})
            return Reply(200, {"ok": True, "sub": claims.get("sub")})
        expiry = self.access_tokens.get(credential)
        if expiry is None or credential in self.revoked or expiry <= time.time():
            return Reply(401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return Reply(200, {"ok": True, "token": credential})
