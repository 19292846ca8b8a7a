"""Inbound webhook signatures: ``core.signatures.verify`` against senders written from the providers' docs.

The headers come from ``webhook_senders``, an independent implementation of each provider's documented
scheme, plus the documented test vectors of GitHub and Svix / Standard Webhooks. Plain tests, no database.
"""

import base64
import hashlib
import hmac

from werkzeug.datastructures import Headers

from odoo.tests.common import BaseCase

from ..core.signatures import GenericHmacOptions, SignatureError, verify
from ..sandbox import webhook_senders as senders

NOW = 1_700_000_000
TOLERANCE = 300
# (signed timestamp - now, accepted): the tolerance holds both ways, its bounds included.
TOLERANCE_EDGES = ((-TOLERANCE, True), (TOLERANCE, True), (-TOLERANCE - 1, False), (TOLERANCE + 1, False))
BODY = b'{"id":"evt_1","type":"order.paid","data":{"amount":4200,"note":"caf\xc3\xa9"}}'
TAMPERED = BODY.replace(b"4200", b"4201")


def _whsec(raw):
    return "whsec_" + base64.b64encode(raw).decode()


def _variants(headers):
    """The same headers as a sender's dict, lower- and upper-cased dicts, and werkzeug ``Headers``."""
    return {
        "as sent": dict(headers),
        "lower-case": {name.lower(): value for name, value in headers.items()},
        "upper-case": {name.upper(): value for name, value in headers.items()},
        "werkzeug": Headers(list(headers.items())),
    }


def _without(headers, name):
    return {key: value for key, value in headers.items() if key.lower() != name.lower()}


class SignatureCase(BaseCase):
    """Assertions shared by the per-profile classes."""

    def assertAccepted(self, profile, body, headers, secrets, **kwargs):
        kwargs.setdefault("now", NOW)
        kwargs.setdefault("tolerance", TOLERANCE)
        try:
            return verify(profile, body, headers, secrets, **kwargs)
        except SignatureError as exc:
            self.fail(f"refused: {exc}")

    def assertRefused(self, profile, body, headers, secrets, **kwargs):
        """A ``SignatureError`` (not another exception) whose reason shows none of the secrets."""
        kwargs.setdefault("now", NOW)
        kwargs.setdefault("tolerance", TOLERANCE)
        with self.assertRaises(SignatureError) as caught:
            verify(profile, body, headers, secrets, **kwargs)
        reason = str(caught.exception)
        self.assertTrue(reason, "a refusal says why")
        for secret in secrets or ():
            for shown in {secret, secret.removeprefix("whsec_")} - {"", "whsec_"}:
                self.assertNotIn(shown, reason)
        return reason


class TestStandardWebhooksSignature(SignatureCase):
    SECRET = _whsec(b"current-standard-webhooks-key-32")
    OLD_SECRET = _whsec(b"previous-standard-webhooks-key-3")
    OTHER_SECRET = _whsec(b"someone-elses-standard-webhooks!")

    def sign(self, body=BODY, secret=None, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", timestamp=NOW):
        return senders.standard_webhooks_headers(secret or self.SECRET, body, msg_id, timestamp)

    def test_documented_vector(self):
        # https://docs.svix.com/receiving/verifying-payloads/how (Svix implements Standard Webhooks)
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        body = b'{"test": 2432232314}'
        headers = {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        self.assertEqual(
            senders.standard_webhooks_headers(secret, body, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330), headers
        )
        self.assertEqual(
            self.assertAccepted("standard_webhooks", body, headers, [secret], now=1614265330).timestamp, 1614265330
        )

    def test_valid(self):
        for label, headers in _variants(self.sign()).items():
            with self.subTest(headers=label):
                self.assertEqual(self.assertAccepted("standard_webhooks", BODY, headers, [self.SECRET]).timestamp, NOW)

    def test_tampered(self):
        headers = self.sign()
        self.assertRefused("standard_webhooks", TAMPERED, headers, [self.SECRET])
        # The id and the timestamp are signed too.
        self.assertRefused("standard_webhooks", BODY, {**headers, "webhook-id": "msg_other"}, [self.SECRET])
        self.assertRefused("standard_webhooks", BODY, {**headers, "webhook-timestamp": str(NOW + 1)}, [self.SECRET])

    def test_wrong_secret(self):
        self.assertRefused("standard_webhooks", BODY, self.sign(secret=self.OTHER_SECRET), [self.SECRET])

    def test_rotated_secret(self):
        headers = self.sign(secret=self.OLD_SECRET)
        self.assertAccepted("standard_webhooks", BODY, headers, [self.SECRET, self.OLD_SECRET])
        self.assertAccepted("standard_webhooks", BODY, self.sign(), [self.SECRET, self.OLD_SECRET])
        self.assertRefused("standard_webhooks", BODY, headers, [self.SECRET])

    def test_several_signatures(self):
        # A sender rotating its key signs with both; one match is enough, whichever entry it is.
        both = self.sign(secret=[self.OTHER_SECRET, self.SECRET])
        self.assertEqual(len(both["webhook-signature"].split(" ")), 2)
        self.assertAccepted("standard_webhooks", BODY, both, [self.SECRET])
        self.assertAccepted("standard_webhooks", BODY, both, [self.OLD_SECRET, self.SECRET])
        self.assertRefused("standard_webhooks", BODY, both, [self.OLD_SECRET])
        # Unknown versions (asymmetric v1a, a future v2) and undecodable entries are skipped.
        valid = self.sign()["webhook-signature"]
        value = valid.removeprefix("v1,")
        for signature in (
            f"v1a,{value} {valid}",
            f"v2,{value} {valid}",
            f"v1,not*base64 {valid}",
            f"{valid} v1,{base64.b64encode(b'x' * 32).decode()}",
        ):
            with self.subTest(signature=signature):
                self.assertAccepted(
                    "standard_webhooks", BODY, {**self.sign(), "webhook-signature": signature}, [self.SECRET]
                )
        # The right value under another version is not a v1 signature.
        for signature in (f"v1a,{value}", f"v2,{value}", value):
            with self.subTest(signature=signature):
                self.assertRefused(
                    "standard_webhooks", BODY, {**self.sign(), "webhook-signature": signature}, [self.SECRET]
                )

    def test_missing_headers(self):
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            with self.subTest(missing=name):
                self.assertRefused("standard_webhooks", BODY, _without(self.sign(), name), [self.SECRET])
        self.assertRefused("standard_webhooks", BODY, {}, [self.SECRET])

    def test_timestamp_tolerance(self):
        for offset, accepted in TOLERANCE_EDGES:
            with self.subTest(offset=offset):
                headers = self.sign(timestamp=NOW + offset)
                if accepted:
                    verified = self.assertAccepted("standard_webhooks", BODY, headers, [self.SECRET])
                    self.assertEqual(verified.timestamp, NOW + offset)
                else:
                    self.assertRefused("standard_webhooks", BODY, headers, [self.SECRET])
        self.assertRefused("standard_webhooks", BODY, self.sign(timestamp=NOW - 11), [self.SECRET], tolerance=10)

    def test_clock_by_default(self):
        self.assertAccepted("standard_webhooks", BODY, self.sign(timestamp=None), [self.SECRET], now=None)
        self.assertRefused("standard_webhooks", BODY, self.sign(), [self.SECRET], now=None)

    def test_no_secret(self):
        for secrets in ([], [""]):
            with self.subTest(secrets=secrets):
                self.assertRefused("standard_webhooks", BODY, self.sign(), secrets)

    def test_malformed(self):
        good = self.sign()
        for name, value in (
            ("webhook-signature", "v1,not*base64!"),
            ("webhook-signature", "v1,"),
            ("webhook-signature", "v1"),
            ("webhook-signature", "garbage"),
            ("webhook-signature", ","),
            ("webhook-signature", ""),
            ("webhook-timestamp", "abc"),
            ("webhook-timestamp", f"{NOW}.5"),
            ("webhook-timestamp", "1e9"),
            ("webhook-timestamp", ""),
            ("webhook-id", ""),
        ):
            with self.subTest(header=name, value=value):
                self.assertRefused("standard_webhooks", BODY, {**good, name: value}, [self.SECRET])

    def test_misconfigured_secret(self):
        # A secret that is not whsec_<base64> is refused as a configuration problem, without echoing it.
        for secret in ("whsec_not*base64*at*all", "whsec_"):
            with self.subTest(secret=secret):
                self.assertRefused("standard_webhooks", BODY, self.sign(), [secret])


class TestStripeSignature(SignatureCase):
    SECRET = "whsec_stripeCurrentSigningSecret0001"
    OLD_SECRET = "whsec_stripePreviousSigningSecret002"
    OTHER_SECRET = "whsec_someoneElsesStripeSecret000003"

    def sign(self, body=BODY, secret=None, timestamp=NOW, **kwargs):
        return senders.stripe_headers(secret or self.SECRET, body, timestamp, **kwargs)

    def test_valid(self):
        for label, headers in _variants(self.sign()).items():
            with self.subTest(headers=label):
                self.assertEqual(self.assertAccepted("stripe", BODY, headers, [self.SECRET]).timestamp, NOW)

    def test_secret_is_not_decoded(self):
        # Stripe keys the HMAC with the whsec_ string itself; a Standard-Webhooks-style key does not verify.
        secret = _whsec(b"a-stripe-secret-that-is-base64!!")
        key = senders.standard_webhooks_key(secret)
        decoded = hmac.new(key, b"%d.%s" % (NOW, BODY), hashlib.sha256).hexdigest()
        self.assertRefused("stripe", BODY, {"Stripe-Signature": f"t={NOW},v1={decoded}"}, [secret])
        self.assertAccepted("stripe", BODY, self.sign(secret=secret), [secret])

    def test_tampered(self):
        self.assertRefused("stripe", TAMPERED, self.sign(), [self.SECRET])
        # The timestamp is signed too.
        value = self.sign()["Stripe-Signature"].replace(f"t={NOW}", f"t={NOW + 1}")
        self.assertRefused("stripe", BODY, {"Stripe-Signature": value}, [self.SECRET])

    def test_wrong_secret(self):
        self.assertRefused("stripe", BODY, self.sign(secret=self.OTHER_SECRET), [self.SECRET])

    def test_rotated_secret(self):
        headers = self.sign(secret=self.OLD_SECRET)
        self.assertAccepted("stripe", BODY, headers, [self.SECRET, self.OLD_SECRET])
        self.assertAccepted("stripe", BODY, self.sign(), [self.SECRET, self.OLD_SECRET])
        self.assertRefused("stripe", BODY, headers, [self.SECRET])

    def test_several_v1_only_a_later_one_valid(self):
        valid = senders.stripe_signature(self.SECRET, BODY, NOW)
        other = senders.stripe_signature(self.OTHER_SECRET, BODY, NOW)
        for extra in (
            [other, valid],
            ["0" * 64, other, valid],
            ["not-hex", valid],
            ["", valid],
        ):
            with self.subTest(extra=extra):
                headers = senders.stripe_headers(None, BODY, NOW, extra_v1=extra)
                self.assertAccepted("stripe", BODY, headers, [self.SECRET])
        # Stripe signing with both of its secrets during a roll: either configured secret verifies.
        both = self.sign(secret=self.OTHER_SECRET, extra_v1=[valid])
        self.assertAccepted("stripe", BODY, both, [self.SECRET])
        self.assertAccepted("stripe", BODY, both, [self.OTHER_SECRET])
        self.assertRefused("stripe", BODY, both, [self.OLD_SECRET])

    def test_v0_is_ignored(self):
        valid = senders.stripe_signature(self.SECRET, BODY, NOW)
        self.assertAccepted("stripe", BODY, self.sign(v0="0" * 64), [self.SECRET])
        # A valid value under the test-mode v0 scheme alone is not a v1 signature.
        self.assertRefused("stripe", BODY, senders.stripe_headers(None, BODY, NOW, v0=valid), [self.SECRET])

    def test_missing_header(self):
        self.assertRefused("stripe", BODY, {}, [self.SECRET])
        self.assertRefused("stripe", BODY, {"X-Signature": self.sign()["Stripe-Signature"]}, [self.SECRET])

    def test_timestamp_tolerance(self):
        for offset, accepted in TOLERANCE_EDGES:
            with self.subTest(offset=offset):
                headers = self.sign(timestamp=NOW + offset)
                if accepted:
                    verified = self.assertAccepted("stripe", BODY, headers, [self.SECRET])
                    self.assertEqual(verified.timestamp, NOW + offset)
                else:
                    self.assertRefused("stripe", BODY, headers, [self.SECRET])

    def test_no_secret(self):
        for secrets in ([], [""]):
            with self.subTest(secrets=secrets):
                self.assertRefused("stripe", BODY, self.sign(), secrets)

    def test_malformed(self):
        valid = senders.stripe_signature(self.SECRET, BODY, NOW)
        for value in (
            f"t=abc,v1={valid}",
            f"t=,v1={valid}",
            f"t={NOW}.5,v1={valid}",
            f"v1={valid}",
            f"t={NOW}",
            f"t={NOW},v1=",
            f"t={NOW},v1=zz",
            f"t={NOW},v1={valid[:-1]}",
            f"t={NOW}v1={valid}",
            "garbage",
            ",,,",
            "=",
            "",
        ):
            with self.subTest(value=value):
                self.assertRefused("stripe", BODY, {"Stripe-Signature": value}, [self.SECRET])


class TestGitHubSignature(SignatureCase):
    SECRET = "github-current-webhook-secret"
    OLD_SECRET = "github-previous-webhook-secret"
    OTHER_SECRET = "someone-elses-github-secret"

    def sign(self, body=BODY, secret=None):
        return senders.github_headers(secret or self.SECRET, body, "72d3162e-cc78-11e3-81ab-4c9367dc0958", "push")

    def test_documented_vector(self):
        # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        # ("Testing the webhook payload validation")
        secret = "It's a Secret to Everybody"
        signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        self.assertEqual(
            senders.github_headers(secret, b"Hello, World!", "d", "ping")["X-Hub-Signature-256"], signature
        )
        self.assertIsNone(
            self.assertAccepted("github", b"Hello, World!", {"X-Hub-Signature-256": signature}, [secret]).timestamp
        )
        self.assertRefused("github", b"Hello, World?", {"X-Hub-Signature-256": signature}, [secret])

    def test_valid(self):
        for label, headers in _variants(self.sign()).items():
            with self.subTest(headers=label):
                self.assertIsNone(self.assertAccepted("github", BODY, headers, [self.SECRET]).timestamp)

    def test_tampered(self):
        self.assertRefused("github", TAMPERED, self.sign(), [self.SECRET])

    def test_wrong_secret(self):
        self.assertRefused("github", BODY, self.sign(secret=self.OTHER_SECRET), [self.SECRET])

    def test_rotated_secret(self):
        headers = self.sign(secret=self.OLD_SECRET)
        self.assertAccepted("github", BODY, headers, [self.SECRET, self.OLD_SECRET])
        self.assertAccepted("github", BODY, self.sign(), [self.SECRET, self.OLD_SECRET])
        self.assertRefused("github", BODY, headers, [self.SECRET])

    def test_missing_header(self):
        self.assertRefused("github", BODY, _without(self.sign(), "X-Hub-Signature-256"), [self.SECRET])
        # The legacy SHA-1 header alone is not enough.
        sha1 = "sha1=" + hmac.new(self.SECRET.encode(), BODY, hashlib.sha1).hexdigest()
        self.assertRefused("github", BODY, {"X-Hub-Signature": sha1}, [self.SECRET])

    def test_no_secret(self):
        for secrets in ([], [""]):
            with self.subTest(secrets=secrets):
                self.assertRefused("github", BODY, self.sign(), secrets)

    def test_malformed(self):
        digest = self.sign()["X-Hub-Signature-256"].removeprefix("sha256=")
        for value in (
            digest,
            "sha1=" + digest,
            "sha256=",
            "sha256=zz" + digest[2:],
            "sha256=" + digest[:-1],
            "sha256=" + base64.b64encode(bytes.fromhex(digest)).decode(),
            "garbage",
            "",
        ):
            with self.subTest(value=value):
                self.assertRefused("github", BODY, {"X-Hub-Signature-256": value}, [self.SECRET])


class TestShopifySignature(SignatureCase):
    SECRET = "shopify-app-client-secret-current"
    OLD_SECRET = "shopify-app-client-secret-previous"
    OTHER_SECRET = "another-apps-client-secret"

    def sign(self, body=BODY, secret=None):
        return senders.shopify_headers(
            secret or self.SECRET, body, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "orders/create"
        )

    def test_valid(self):
        for label, headers in _variants(self.sign()).items():
            with self.subTest(headers=label):
                self.assertIsNone(self.assertAccepted("shopify", BODY, headers, [self.SECRET]).timestamp)

    def test_tampered(self):
        self.assertRefused("shopify", TAMPERED, self.sign(), [self.SECRET])

    def test_wrong_secret(self):
        self.assertRefused("shopify", BODY, self.sign(secret=self.OTHER_SECRET), [self.SECRET])

    def test_rotated_secret(self):
        headers = self.sign(secret=self.OLD_SECRET)
        self.assertAccepted("shopify", BODY, headers, [self.SECRET, self.OLD_SECRET])
        self.assertAccepted("shopify", BODY, self.sign(), [self.SECRET, self.OLD_SECRET])
        self.assertRefused("shopify", BODY, headers, [self.SECRET])

    def test_missing_header(self):
        self.assertRefused("shopify", BODY, _without(self.sign(), "X-Shopify-Hmac-SHA256"), [self.SECRET])

    def test_no_secret(self):
        for secrets in ([], [""]):
            with self.subTest(secrets=secrets):
                self.assertRefused("shopify", BODY, self.sign(), secrets)

    def test_malformed(self):
        digest = self.sign()["X-Shopify-Hmac-SHA256"]
        raw = base64.b64decode(digest)
        for value in (
            "not*base64!",
            digest[:-2],
            raw.hex(),  # the hex digest where base64 is expected
            "sha256=" + digest,
            "",
        ):
            with self.subTest(value=value):
                self.assertRefused("shopify", BODY, {"X-Shopify-Hmac-SHA256": value}, [self.SECRET])


class TestGenericHmacSignature(SignatureCase):
    SECRET = "generic-current-secret"
    OLD_SECRET = "generic-previous-secret"
    OTHER_SECRET = "someone-elses-generic-secret"
    TIMED = GenericHmacOptions(
        header="X-Hook-Signature", encoding="base64", prefix="sha256=", timestamp_header="X-Hook-Timestamp"
    )

    def sign(self, options, body=BODY, secret=None, timestamp=NOW):
        return senders.generic_hmac_headers(
            secret or self.SECRET,
            body,
            header=options.header,
            encoding=options.encoding,
            prefix=options.prefix,
            timestamp_header=options.timestamp_header or None,
            timestamp=timestamp,
        )

    OPTIONS = (
        GenericHmacOptions(),
        GenericHmacOptions(encoding="base64"),
        GenericHmacOptions(header="X-Webhook-Signature", prefix="sha256="),
        GenericHmacOptions(timestamp_header="X-Timestamp"),
        TIMED,
    )

    def test_valid(self):
        for options in self.OPTIONS:
            for label, headers in _variants(self.sign(options)).items():
                with self.subTest(options=options, headers=label):
                    verified = self.assertAccepted("hmac_sha256", BODY, headers, [self.SECRET], options=options)
                    self.assertEqual(verified.timestamp, NOW if options.timestamp_header else None)

    def test_default_options(self):
        self.assertAccepted("hmac_sha256", BODY, senders.generic_hmac_headers(self.SECRET, BODY), [self.SECRET])

    def test_tampered(self):
        for options in self.OPTIONS:
            with self.subTest(options=options):
                self.assertRefused("hmac_sha256", TAMPERED, self.sign(options), [self.SECRET], options=options)
        headers = {**self.sign(self.TIMED), "X-Hook-Timestamp": str(NOW + 1)}
        self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=self.TIMED)

    def test_wrong_secret(self):
        for options in self.OPTIONS:
            with self.subTest(options=options):
                headers = self.sign(options, secret=self.OTHER_SECRET)
                self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=options)

    def test_rotated_secret(self):
        for options in self.OPTIONS:
            with self.subTest(options=options):
                headers = self.sign(options, secret=self.OLD_SECRET)
                self.assertAccepted("hmac_sha256", BODY, headers, [self.SECRET, self.OLD_SECRET], options=options)
                self.assertAccepted(
                    "hmac_sha256", BODY, self.sign(options), [self.SECRET, self.OLD_SECRET], options=options
                )
                self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=options)

    def test_options_must_match_the_sender(self):
        plain = GenericHmacOptions()
        for signed_with, checked_with in (
            (plain, GenericHmacOptions(encoding="base64")),
            (GenericHmacOptions(encoding="base64"), plain),
            (plain, GenericHmacOptions(prefix="sha256=")),
            (plain, GenericHmacOptions(header="X-Other-Signature")),
            (GenericHmacOptions(timestamp_header="X-Timestamp"), plain),
            (plain, GenericHmacOptions(timestamp_header="X-Timestamp")),
        ):
            with self.subTest(signed_with=signed_with, checked_with=checked_with):
                headers = self.sign(signed_with)
                self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=checked_with)

    def test_missing_headers(self):
        self.assertRefused("hmac_sha256", BODY, {}, [self.SECRET], options=GenericHmacOptions())
        for name in ("X-Hook-Signature", "X-Hook-Timestamp"):
            with self.subTest(missing=name):
                headers = _without(self.sign(self.TIMED), name)
                self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=self.TIMED)

    def test_timestamp_tolerance(self):
        for offset, accepted in TOLERANCE_EDGES:
            with self.subTest(offset=offset):
                headers = self.sign(self.TIMED, timestamp=NOW + offset)
                if accepted:
                    verified = self.assertAccepted("hmac_sha256", BODY, headers, [self.SECRET], options=self.TIMED)
                    self.assertEqual(verified.timestamp, NOW + offset)
                else:
                    self.assertRefused("hmac_sha256", BODY, headers, [self.SECRET], options=self.TIMED)

    def test_untimed_has_no_tolerance(self):
        # Without a timestamp header nothing dates the delivery: "now" does not matter.
        headers = self.sign(GenericHmacOptions())
        self.assertAccepted("hmac_sha256", BODY, headers, [self.SECRET], now=NOW + 10 * 365 * 86400)

    def test_no_secret(self):
        for secrets in ([], [""]):
            with self.subTest(secrets=secrets):
                self.assertRefused("hmac_sha256", BODY, self.sign(self.TIMED), secrets, options=self.TIMED)

    def test_malformed(self):
        hex_options = GenericHmacOptions(prefix="sha256=")
        digest = self.sign(hex_options)["X-Signature"].removeprefix("sha256=")
        for value in (
            "sha256=zz" + digest[2:],
            "sha256=",
            digest,
            "SHA256=" + digest,
            "sha256=" + digest[:-1],
            "garbage",
            "",
        ):
            with self.subTest(value=value):
                self.assertRefused("hmac_sha256", BODY, {"X-Signature": value}, [self.SECRET], options=hex_options)
        good = self.sign(self.TIMED)
        for name, value in (
            ("X-Hook-Signature", "sha256=not*base64!"),
            ("X-Hook-Signature", "sha256=" + base64.b64decode(good["X-Hook-Signature"][7:]).hex()),
            ("X-Hook-Timestamp", "abc"),
            ("X-Hook-Timestamp", f"{NOW}.0"),
            ("X-Hook-Timestamp", ""),
        ):
            with self.subTest(header=name, value=value):
                self.assertRefused("hmac_sha256", BODY, {**good, name: value}, [self.SECRET], options=self.TIMED)


class TestNoneProfile(SignatureCase):
    def test_accepts_anything(self):
        for headers in ({}, {"X-Signature": "garbage"}, Headers(), senders.github_headers("x", BODY, "d", "push")):
            for secrets in ([], ["a-secret"], ["", "b"]):
                with self.subTest(headers=headers, secrets=secrets):
                    verified = verify("none", BODY, headers, secrets, now=0, tolerance=0)
                    self.assertIsNone(verified.timestamp)
        self.assertIsNone(verify("none", b"", {}, []).timestamp)


class TestSignatureCommon(SignatureCase):
    def test_unknown_profile(self):
        self.assertRefused("hmac_sha512", BODY, {}, ["a-secret"])

    def test_bare_string_secret_is_not_split(self):
        # A caller passing the secret string instead of a list must not turn every character of it
        # into an accepted one-letter secret (which anyone could sign with).
        secret = "s3cret-value"
        for profile, headers in (
            ("github", senders.github_headers("s", BODY, "d", "push")),
            ("shopify", senders.shopify_headers("s", BODY, "w", "orders/create")),
            ("stripe", senders.stripe_headers("s", BODY, NOW)),
            ("hmac_sha256", senders.generic_hmac_headers("s", BODY)),
        ):
            with self.subTest(profile=profile):
                with self.assertRaises((SignatureError, TypeError)):
                    verify(profile, BODY, headers, secret, now=NOW)

    def test_reasons_never_show_the_secret_or_signature(self):
        # assertRefused checks every refusal above for the secrets; here also the expected signature.
        secret = "do-not-show-me-0123456789"
        body_signature = senders.github_headers(secret, BODY, "d", "push")["X-Hub-Signature-256"]
        for profile, headers in (
            ("github", senders.github_headers(secret, TAMPERED, "d", "push")),
            ("shopify", senders.shopify_headers(secret, TAMPERED, "w", "orders/create")),
            ("stripe", senders.stripe_headers(secret, TAMPERED, NOW)),
            ("hmac_sha256", senders.generic_hmac_headers(secret, TAMPERED)),
        ):
            with self.subTest(profile=profile):
                reason = self.assertRefused(profile, BODY, headers, [secret])
                self.assertNotIn(body_signature.removeprefix("sha256="), reason)
                self.assertNotIn(base64.b64encode(bytes.fromhex(body_signature[7:])).decode(), reason)
