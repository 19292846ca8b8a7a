"""Hostile webhook deliveries: validly signed, yet odd or malicious bodies and headers.

The README's table "Hostile input" lists what each one gets; these tests hold the code to it.
"""

import base64
import json
from decimal import Decimal

from odoo.tests.common import BaseCase

from ..core.exceptions import JSONNestingError
from ..core.jsonpath import json_path_get
from ..core.jsonutil import (
    MAX_DEPTH,
    loads,
    loads_or_none,
    nesting_depth_exceeds,
    payload_bytes,
    payload_text,
    pretty,
    pretty_payload,
    to_field_value,
)
from ..core.redact import redact_text
from ..core.textsafe import EVENT_ID_LIMIT, bounded_text, clean_text, is_storable, unique_key


def nested(depth, inner=b""):
    return b"[" * depth + inner + b"]" * depth


class TestHostileTextAndJSON(BaseCase):
    """The plain helpers (``core/textsafe.py``, ``core/jsonutil.py``, ``core/jsonpath.py``), without a database."""

    def test_text_is_made_storable_visibly(self):
        self.assertEqual(clean_text("a\x00b\ud800c\udfff"), "a\ufffdb\ufffdc\ufffd")
        self.assertEqual(clean_text("plain: é, 😀, \ufffd"), "plain: é, 😀, \ufffd")
        self.assertFalse(is_storable("a\x00"))
        self.assertTrue(is_storable("a\ufffd"))
        self.assertEqual(bounded_text("t" * 10240, 128), "t" * 127 + "\u2026")
        self.assertEqual(bounded_text("short\x00", 128), "short\ufffd")
        self.assertEqual(bounded_text(None, 128), "")
        self.assertEqual(redact_text("error about a\x00b"), "error about a\ufffdb", "stored error messages too")

    def test_identifiers_stay_unique_and_stable_when_shortened_or_cleaned(self):
        self.assertEqual(unique_key("evt_123"), "evt_123", "a usable id is kept as sent")
        first, second = "A" * 5000 + "x" * 5000, "A" * 5000 + "y" * 5000
        keys = unique_key(first), unique_key(second)
        self.assertNotEqual(keys[0], keys[1], "ids sharing their first 5,000 characters stay two ids")
        for key in keys:
            self.assertEqual(len(key), EVENT_ID_LIMIT)
            self.assertTrue(key.startswith("A" * 150))
            self.assertRegex(key, "\u2026sha256:[0-9a-f]{64}$")
            self.assertEqual(unique_key(key), key, "a key given again is unchanged")
        self.assertEqual(unique_key(first), keys[0], "the same id always gives the same key")
        self.assertNotEqual(unique_key("a\x00b"), unique_key("a\ufffdb"), "a NUL does not merge two ids")
        self.assertTrue(unique_key("a\x00b").startswith("a\ufffdb\u2026sha256:"))
        self.assertTrue(is_storable(unique_key("\ud800" * 300)))

    def test_nesting_is_bounded_before_the_parser_recurses(self):
        self.assertEqual(loads(nested(MAX_DEPTH)), loads(nested(MAX_DEPTH)))
        for body in (nested(50000), nested(MAX_DEPTH + 1), b'{"a":' * 200 + b"1" + b"}" * 200):
            with self.assertRaisesRegex(JSONNestingError, f"deeper than {MAX_DEPTH} levels"):
                loads(body)
            self.assertIsNone(loads_or_none(body))
        # Brackets inside strings are text, escaped quotes included.
        text = json.dumps({"s": "[" * 1000 + '\\"' + "{" * 1000})
        self.assertFalse(nesting_depth_exceeds(text))
        self.assertEqual(loads(text)["s"][:3], "[[[")
        self.assertTrue(nesting_depth_exceeds('"]]]' + "[" * 200), "never too low for text json would read")
        self.assertTrue(issubclass(JSONNestingError, ValueError))

    def test_numbers_beyond_float_and_int_limits_parse_exactly(self):
        document = loads(b'{"float": 1e400, "int": ' + b"9" * 5000 + b', "small": 12, "real": 1.5}')
        self.assertEqual(document["float"], Decimal("1e400"))
        self.assertEqual(document["int"], Decimal("9" * 5000))
        self.assertEqual((document["small"], document["real"]), (12, 1.5))
        self.assertIsInstance(document["small"], int)
        self.assertEqual(str(document["int"]), "9" * 5000, "the digits survive as text")

    def test_not_utf8_duplicates_bom_and_nul(self):
        self.assertEqual(loads(b'{"name": "Caf\xe9"}'), {"name": "Caf\ufffd"})
        self.assertEqual(loads(b'\xef\xbb\xbf{"a": 1}'), {"a": 1}, "a UTF-8 byte-order mark is skipped")
        self.assertEqual(loads(b'{"type": "first", "type": "second"}'), {"type": "second"}, "the last one wins")
        self.assertEqual(loads(b'{"t": "a\\u0000b"}'), {"t": "a\x00b"}, "kept as sent by default")
        cleaned = loads(b'{"t\\u0000": ["a\\u0000b", {"x": "\\ud800"}], "n": null}', clean=True)
        self.assertEqual(cleaned, {"t\ufffd": ["a\ufffdb", {"x": "\ufffd"}], "n": None})
        with self.assertRaisesRegex(ValueError, "Invalid control character"):
            loads(b'{"t": "a\x00b"}')  # a raw NUL byte in a string is not JSON
        for not_json in (b"", b"this is not JSON", b"{"):
            self.assertIsNone(loads_or_none(not_json))

    def test_json_path_lookups(self):
        document = {"data": {"items": [{"sku": "A"}, {"sku": "B"}], "id": 0}}
        self.assertEqual(json_path_get(document, "data.items.1.sku"), "B")
        self.assertEqual(json_path_get(document, "data.id"), 0)
        for path in ("data.items.2.sku", "data.items.x", "data.items.\u00b2", "nothing.here", "data.id.more"):
            self.assertIsNone(json_path_get(document, path), path)

    def test_field_values_fit_their_columns(self):
        self.assertEqual(to_field_value("A\x00B", "char"), "A\ufffdB")
        self.assertEqual(to_field_value(Decimal("9" * 5000), "char"), "9" * 5000)
        self.assertEqual(to_field_value(Decimal("1e400"), "char"), "1E+400")
        as_text = to_field_value({"a": "\x00", "n": Decimal("1e400")}, "text")
        self.assertEqual(as_text, '{"a": "\\u0000", "n": "1E+400"}')
        self.assertEqual(to_field_value(" 42 ", "integer"), 42)
        self.assertEqual(to_field_value(2.5, "float"), 2.5)
        self.assertIs(to_field_value(None, "char"), False)
        for value, ttype, reason in (
            (Decimal("1e400"), "float", "not a finite number"),
            (float("inf"), "monetary", "not a finite number"),
            ("1e400", "float", "not a finite number"),
            (Decimal("9" * 5000), "integer", "out of the integer range"),
            (Decimal("1e999999999"), "integer", "out of the integer range"),
            (2**31, "integer", "out of the integer range"),
            (float("nan"), "integer", "not a finite number"),
            ("9" * 5000, "integer", "digits"),
            ("2024-13-01\x00", "date", "month"),
        ):
            with self.subTest(value=str(value)[:20], ttype=ttype), self.assertRaisesRegex(ValueError, reason):
                to_field_value(value, ttype)

    def test_payload_kept_as_signed(self):
        for body, as_text in (
            (b'{"a": "\\u0000"}', True),
            (b'{"a": "\x00"}', False),
            (b'{"a": "Caf\xe9"}', False),
            (b"", True),
        ):
            payload, is_base64 = payload_text(body)
            self.assertEqual(is_base64, not as_text)
            self.assertTrue(is_storable(payload))
            self.assertEqual(payload_bytes(payload, is_base64), body, "the stored payload is the signed bytes")

    def test_payload_shown_readably(self):
        self.assertEqual(pretty('{"a": [1]}'), '{\n  "a": [\n    1\n  ]\n}')
        self.assertEqual(pretty(nested(50000).decode()), nested(50000).decode(), "too deep: shown as received")
        self.assertEqual(pretty('{"n": 1e400}'), '{"n": 1e400}', "shown as sent, not re-serialized")
        self.assertEqual(pretty("not json"), "not json")
        shown = pretty_payload(base64.b64encode(b'{"name": "Caf\xe9"}').decode(), True)
        self.assertEqual(json.loads(shown), {"name": "Caf\ufffd"})
        raw_nul = base64.b64encode(b'{"a": "\x00"}').decode()
        self.assertEqual(pretty_payload(raw_nul, True), raw_nul, "not JSON: the base64 as stored")
