"""Text a sender chose, made fit for a PostgreSQL text column.

PostgreSQL refuses NUL (U+0000) anywhere in text, and psycopg2 cannot encode a lone UTF-16
surrogate (what JSON's ``"\\ud800"`` escape parses to) as UTF-8: either one, in any value
written, fails the whole statement. Senders put both in JSON strings and headers, on
purpose or not. Everything taken from a delivery passes through here before it is stored:
text is cleaned (the character becomes U+FFFD, visibly), never refused.
"""

import hashlib
import re

REPLACEMENT = "\ufffd"
ELLIPSIS = "\u2026"
# Characters PostgreSQL or psycopg2 cannot store in text.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Event ids are unique per connector (a btree index) and shown in lists: bounded.
EVENT_ID_LIMIT = 255
EVENT_TYPE_LIMIT = 128
# "…sha256:" and the hex digest that keeps a shortened or cleaned identifier unique.
_KEY_SUFFIX_LENGTH = len(ELLIPSIS) + len("sha256:") + 64


def is_storable(text):
    """True when PostgreSQL can store ``text`` as it is."""
    return not _UNSTORABLE.search(text)


def clean_text(text):
    """``text`` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def bounded_text(text, limit):
    """Cleaned, and cut to ``limit`` characters (the last one an ellipsis) when longer."""
    text = clean_text(text or "")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def unique_key(text, limit=EVENT_ID_LIMIT):
    """An identifier as it can be stored, still telling distinct identifiers apart.

    The identifier itself when it is storable and within ``limit``; otherwise its cleaned
    beginning followed by ``…sha256:<digest of the identifier as sent>``. Two ids sharing
    their first kilobytes, or differing only by a NUL, stay two ids (a duplicate delivery
    of either still finds its own), and the result is stable: the same id always gives
    the same key, and a key given again is returned unchanged.
    """
    if len(text) <= limit and is_storable(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return clean_text(text)[: limit - _KEY_SUFFIX_LENGTH] + f"{ELLIPSIS}sha256:{digest}"
