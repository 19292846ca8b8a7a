"""Encryption of connector secrets at rest (Fernet, several keys for rotation).

Keys come as one string of comma- or whitespace-separated Fernet keys (urlsafe base64 of
32 bytes), newest first. The first key encrypts; every key is tried to decrypt, so an old
key stays in the list until ``SecretBox.rotate`` re-encrypted everything with the new one.
"""

import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .exceptions import EncryptionKeyError, SecretDecryptionError

KEY_GENERATE_HINT = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def parse_keys(raw):
    """Return the list of keys in ``raw`` (a string, or None) in their configured order."""
    if not raw:
        return []
    return [key for key in re.split(r"[\s,]+", str(raw).strip()) if key]


class SecretBox:
    """Encrypts and decrypts text with a list of Fernet keys (first one is current)."""

    def __init__(self, keys):
        if not keys:
            raise EncryptionKeyError("no encryption key configured")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
            except (ValueError, TypeError) as exc:
                # Never echo the key itself: it is a secret too.
                raise EncryptionKeyError(
                    f"encryption key #{position} is not a valid Fernet key "
                    f"(32 url-safe base64-encoded bytes); generate one with: {KEY_GENERATE_HINT}"
                ) from exc
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext):
        if not isinstance(plaintext, str):
            raise TypeError("only text secrets can be encrypted")
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token):
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretDecryptionError(
                "the stored value cannot be decrypted with any configured key "
                "(was the key it was encrypted with removed from the list?)"
            ) from exc

    def rotate(self, token):
        """Re-encrypt ``token`` with the current (first) key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretDecryptionError("the stored value cannot be decrypted with any configured key") from exc
