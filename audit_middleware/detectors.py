"""String-level rules: key normalisation and denylists, value detectors, cleaning of client strings.

Used by :class:`audit_middleware.redaction.Redactor`; kept apart so the rules can be read in one place.

Keys are matched after normalisation (lower-cased, ``_ - . space`` removed), so ``newPassword``,
``new_password`` and ``New-Password`` are the same key. Three kinds of default rules:

* stems matched anywhere in the normalised key (:data:`DEFAULT_DENY_STEMS`: ``password``, ``secret``,
  ``token``...);
* short words matched only as a whole word of the key, split on separators and camelCase
  (:data:`DEFAULT_DENY_WORDS`: ``pin``, ``otp``, ``ssn``...), so ``card_pin`` and ``userPass`` are
  redacted but ``spinner``, ``passport_country`` and ``passenger`` are not;
* whole keys (the rest of :data:`DEFAULT_DENY_KEYS`: ``code``, ``session``, ``salt``, ``signature``...).
  ``code`` is denied as a whole key because on the routes we audit it is an OAuth authorization code
  or a one-time code; ``country_code`` and ``zip_code`` are kept.

Value detectors (:data:`DETECTORS`, applied with :func:`mask_match`) find secrets in any string: HTTP
``Bearer``/``Token``/``Digest`` credentials (8+ characters with a digit or punctuation, or 20+), ``Basic``
credentials (base64 of ``user:password``), JWTs (``eyJ...`` segments), PEM private keys (``-----BEGIN ...
PRIVATE KEY-----`` to its END line, or to the end of the string when cut), URL userinfo
(``scheme://user:password@``) and 13-19 digit card numbers (spaces or dashes allowed) passing Luhn.
Only the matched part is replaced.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = [
    "DEFAULT_DENY_KEYS",
    "DEFAULT_DENY_STEMS",
    "DEFAULT_DENY_WORDS",
    "DETECTORS",
    "REDACTED",
    "TRUNCATED",
    "clean",
    "key_words",
    "looks_like_token",
    "luhn_valid",
    "mask_match",
    "normalise_key",
]

REDACTED: str = "[REDACTED]"
TRUNCATED: str = "[TRUNCATED]"

DEFAULT_DENY_STEMS: frozenset[str] = frozenset(
    {
        "password", "passwd", "passphrase", "passcode", "secret", "token", "apikey", "privatekey",
        "signingkey", "encryptionkey", "cardnumber", "creditcard", "ccnum", "authorization", "cookie",
        "csrf", "xsrf", "credential", "socialsecurity",
    }
)  # fmt: skip
DEFAULT_DENY_WORDS: frozenset[str] = frozenset(
    {"pass", "pwd", "pin", "otp", "totp", "hotp", "ssn", "cvv", "cvc", "cvv2", "cvc2", "csc"}
)
DEFAULT_DENY_KEYS: frozenset[str] = DEFAULT_DENY_STEMS | DEFAULT_DENY_WORDS | frozenset(
    {
        "code", "authcode", "mfacode", "otpcode", "verificationcode", "recoverycode", "backupcode", "resetcode",
        "securitycode", "confirmationcode", "twofactorcode", "2facode", "codeverifier", "session", "sessionkey",
        "sessionid", "sessid", "phpsessid", "jsessionid", "auth", "salt", "hash", "signature", "sig", "pan", "iban",
        "clientsecret", "accesstoken", "refreshtoken", "idtoken", "authtoken", "setcookie", "xapikey",
        "newpassword", "oldpassword", "currentpassword", "passwordconfirmation", "cardnumber", "ssn",
    }
)  # fmt: skip
_SEPARATORS = str.maketrans("", "", "_-. ")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
DETECTORS = re.compile(
    r"(?P<pem>-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----|.*\Z))"
    r"|(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@:]*:[^\s/?#@]*@"
    r"|\b(?P<scheme>(?i:bearer|basic|token|digest))[ \t]+(?P<cred>[A-Za-z0-9\-._~+/]+=*)"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*)?)"
    r"|(?P<card>(?<![\d])\d(?:[ \-]?\d){12,18}(?!\d))",
    re.S,
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOKEN_SEGMENT = re.compile(r"^[A-Za-z0-9_\-~.=]{20,}$")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


def normalise_key(key: str) -> str:
    """Return ``key`` lower-cased without ``_``, ``-``, ``.`` or spaces (``New-Password`` -> ``newpassword``)."""
    return key.lower().translate(_SEPARATORS)


def key_words(key: str) -> list[str]:
    """Split a key into lower-cased words on separators and camelCase (``newPIN_code`` -> new, pin, code)."""
    return [word.lower() for word in _WORDS.findall(key)]


def clean(value: str) -> str:
    """Return ``value`` without C0 controls other than tab and newline, lone surrogates replaced by U+FFFD."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if _CONTROL.search(value) is not None:
        value = _CONTROL.sub("", value)
    return value


def luhn_valid(digits: str) -> bool:
    """Return whether a string of digits passes the Luhn checksum (card numbers do)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def looks_like_token(segment: str) -> bool:
    """Whether a path segment looks like a credential: a JWT, a 16+ hex run, or 20+ mixed-case-and-digit chars.

    Canonical UUIDs and lower-case slugs (``my-first-blog-post-2024``) are not tokens.
    """
    if len(segment) < 20 or _TOKEN_SEGMENT.match(segment) is None or _UUID.match(segment) is not None:
        return False
    if segment.startswith("eyJ"):
        return True
    hex_run = _HEX_RUN.search(segment)
    if hex_run is not None and any(c.isdigit() for c in hex_run.group()) and any(c.isalpha() for c in hex_run.group()):
        return True
    return any(c.isupper() for c in segment) and any(c.islower() for c in segment) and any(c.isdigit() for c in segment)


def mask_match(match: re.Match[str]) -> str:
    """Replacement for a :data:`DETECTORS` match: ``REDACTED`` in place of the secret, or the match unchanged."""
    kind = match.lastgroup
    if kind == "url":
        return match.group("url") + REDACTED + "@"
    if kind == "card":
        digits = match.group().replace(" ", "").replace("-", "")
        return REDACTED if luhn_valid(digits) else match.group()
    if kind == "cred":
        scheme, cred = match.group("scheme"), match.group("cred")
        if scheme.lower() == "basic":
            try:
                secret = b":" in base64.b64decode(cred, validate=True)
            except (binascii.Error, ValueError):
                secret = False
        else:
            secret = len(cred) >= 8 and (len(cred) >= 20 or any(c.isdigit() or c in "._~+/-=" for c in cred))
        return f"{scheme} {REDACTED}" if secret else match.group()
    return REDACTED  # pem, jwt
