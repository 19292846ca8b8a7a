"""JSON from senders: parsed with bounds, stored and shown as sent.

A webhook body is verified before it is parsed, but a verified body can still be hostile
or merely odd; what this module does with each kind (the README's table "Hostile input"
lists the outcomes):

- not UTF-8: decoded with U+FFFD for each invalid sequence (RFC 8259 says UTF-8; a leading
  byte-order mark is skipped);
- nested deeper than ``MAX_DEPTH`` arrays/objects: refused with ``JSONNestingError`` (a
  ``ValueError``) before ``json`` recurses, so that the recursion limit is never reached;
- integers of more than Python's 4300-digit conversion limit, and numbers a float cannot
  hold (``1e400``): parsed as exact ``decimal.Decimal`` instead of failing the whole body
  (ints) or becoming infinity (floats);
- duplicate keys: the last one wins, as in JavaScript's ``JSON.parse`` and Python's json;
- NUL (``\\u0000``) and lone surrogates in strings: kept as parsed (identifiers are hashed
  from what the sender sent, see ``textsafe.unique_key``); ``loads(..., clean=True)``
  replaces them for code that writes the values (processing).

Dotted paths into the parsed document and its values as field values: ``core/jsonpath.py``.
Plain Python: no Odoo imports.
"""

import base64
import hashlib
import json
import math
import re
from decimal import Decimal

from .exceptions import JSONNestingError
from .textsafe import clean_text

# Deepest nesting of arrays and objects parsed. Far beyond real webhook payloads, far
# below Python's recursion limit (json's parser recurses once per level, and so does
# pretty-printing); the same bound as serde_json's default.
MAX_DEPTH = 128

# A JSON string, or an unterminated one up to the end: a match never fails once started,
# so the scan stays linear whatever the text (a pattern that could fail would be tried
# again from every later quote: quadratic on a body of escaped quotes).
_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_BRACKET = re.compile(r"[\[\]{}]")
# A JSON escape of NUL or of a UTF-16 surrogate: the only ways such a character gets into
# a parsed string (a raw NUL byte in a string is invalid JSON).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def decode(body):
    """The text of a body: UTF-8, each invalid sequence as U+FFFD, without a leading BOM."""
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body).decode("utf-8", errors="replace")
    return body.removeprefix("\ufeff")


def nesting_depth_exceeds(text, limit=MAX_DEPTH):
    """Whether the arrays and objects of JSON ``text`` nest deeper than ``limit``.

    Brackets inside strings do not count. For invalid JSON the answer may be too high,
    never too low for the part ``json`` would read before it fails.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # not even that many openings: the usual case, and cheap
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(depth - 1, 0)
    return False


def _parse_int(digits):
    try:
        return int(digits)
    except ValueError:  # over sys.get_int_max_str_digits(): exact, without the conversion
        return Decimal(digits)


def _parse_float(text):
    number = float(text)
    return number if math.isfinite(number) else Decimal(text)


def loads(data, max_depth=MAX_DEPTH, clean=False):
    """Parse JSON ``data`` (bytes as received, or text) within the bounds above.

    :param clean: replace NUL and lone surrogates in every string (keys included) with
        U+FFFD, for values that will be written to the database
    :raises ValueError: not JSON (``json.JSONDecodeError``), or nested too deep
        (``JSONNestingError``)
    """
    text = decode(data)
    if nesting_depth_exceeds(text, max_depth):
        raise JSONNestingError(f"the JSON nests arrays or objects deeper than {max_depth} levels")
    try:
        document = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError:
        # Not expected under MAX_DEPTH; a deep call stack elsewhere must not make it a 500.
        raise JSONNestingError("the JSON nests too deep to be parsed here") from None
    if clean and _UNSTORABLE_ESCAPE.search(text):
        document = _cleaned(document)
    return document


def loads_or_none(data, max_depth=MAX_DEPTH):
    """The parsed JSON of ``data``, or None when it is not JSON this module parses.

    For the webhook route, which only reads an event's id and type on the sender's clock:
    ``json``'s C parser first, as is (no depth scan, no number hooks: a 15 KB order takes
    a third of the time). It refuses nesting deeper than the recursion limit allows with a
    ``RecursionError`` of its own, which gives None here (the body is stored unparsed, and
    processing refuses it with ``loads``'s clear message). Only what it refuses as invalid
    goes through ``loads`` (integers over the 4300-digit limit, say).
    """
    text = decode(data)
    try:
        return json.loads(text)
    except RecursionError:
        return None
    except ValueError:
        # Invalid for the C parser: maybe only an integer past the 4300-digit limit.
        try:
            return loads(text, max_depth)
        except ValueError:
            return None


def _cleaned(document):
    """``document`` with its strings made storable (iteratively: the depth is bounded, but
    a loop costs nothing)."""

    def clean(value):
        return clean_text(value) if isinstance(value, str) else value

    root = [clean(document)]
    stack = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            cleaned = {clean(k): clean(v) for k, v in value.items()}
            container[key] = cleaned
            stack.extend((cleaned, k) for k, v in cleaned.items() if isinstance(v, dict | list))
        elif isinstance(value, list):
            cleaned = [clean(v) for v in value]
            container[key] = cleaned
            stack.extend((cleaned, i) for i, v in enumerate(cleaned) if isinstance(v, dict | list))
    return root[0]


def payload_text(body):
    """How a raw body is kept in a text column: ``(text, is_base64)``.

    The body itself when it is UTF-8 text PostgreSQL can store; otherwise (invalid
    UTF-8, or a NUL byte) its base64, so that the stored payload is always exactly the
    bytes the signature covered.
    """
    # Strict UTF-8 never decodes to a lone surrogate: a NUL is all PostgreSQL's text
    # would refuse of a body that decodes (checked on the bytes, cheaper than a scan).
    if b"\x00" not in body:
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            return base64.b64encode(body).decode(), True
    return base64.b64encode(body).decode(), True


def payload_bytes(payload, is_base64):
    """The raw body back from ``payload_text``'s ``(text, is_base64)``."""
    return base64.b64decode(payload or "") if is_base64 else (payload or "").encode()


def pretty(text):
    """JSON ``text`` indented for reading; the text unchanged when it is not JSON (or
    holds numbers a float cannot, which re-serializing would not show as sent)."""
    if not text:
        return text
    try:
        return json.dumps(loads(text, clean=True), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return text


def pretty_payload(payload, is_base64):
    """A stored payload for reading: a base64 one is shown decoded (U+FFFD for what is
    not UTF-8 or not storable) when that decoding is JSON, else as stored."""
    if not is_base64:
        return pretty(payload)
    try:
        document = loads(base64.b64decode(payload or ""), clean=True)
        return json.dumps(document, indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return payload


def payload_digest(payload):
    """SHA-256 of a JSON-able payload in canonical form (sorted keys, no spaces): the same
    data gives the same digest whatever the order its dict was built in. Used to skip a
    record whose payload did not change since it was last sent or received."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()


def compact_bytes(payload):
    """``payload`` as a body travels: compact UTF-8 JSON. (``requests``' own ``json=`` adds
    spaces and escapes non-ASCII text, up to six bytes a character: a batch measured on this
    form would travel larger than measured.)"""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()
