"""String-level rules: key normalisation and denylists, value detectors, cleaning of client strings.

Used by :class:`audit_middleware.redaction.Redactor`; kept apart so the rules can be read in one place.

Keys are matched after normalisation (lower-cased, ``_ - . space [ ]`` removed; non-ASCII keys NFKC-folded
without zero-width characters), so ``newPassword``, ``new_password``, ``New-Password`` and the nested form
key ``new[password]`` are the same key. Three kinds of default rules:

* stems matched anywhere in the normalised key (:data:`DEFAULT_DENY_STEMS`: ``password``, ``secret``,
  ``token``...);
* short words matched only as a whole word of the key, split on separators and camelCase
  (:data:`DEFAULT_DENY_WORDS`: ``pin``, ``otp``, ``ssn``, ``jwt``, ``signature``...), so ``card_pin``,
  ``userPass`` and ``X-Amz-Signature`` are redacted but ``spinner``, ``passport_country`` and
  ``passenger`` are not;
* whole keys (the rest of :data:`DEFAULT_DENY_KEYS`: ``code``, ``session``, ``salt``, ``sig``...).
  ``code`` is denied as a whole key because on the routes we audit it is an OAuth authorization code
  or a one-time code; ``country_code`` and ``zip_code`` are kept. ``key`` likewise: dj-rest-auth's
  email verification and allauth's headless password reset send their secret as ``{"key": ...}``,
  and ``?key=`` is how many APIs take an API key; ``key_id`` and ``keyboard`` are kept.

Value detectors (:func:`mask_secrets`) find secrets in any string: HTTP
``Bearer``/``Token``/``Digest`` credentials (8+ characters with a digit or punctuation, or 20+), ``Basic``
credentials (base64 of ``user:password``), JWTs (``eyJ...`` segments), PEM private keys (``-----BEGIN ...
PRIVATE KEY-----`` to its END line, or to the end of the string when cut), URL userinfo
(``scheme://user:password@``), provider API keys with a known prefix (AWS ``AKIA``/``ASIA``, GitHub
``ghp_``/``github_pat_``, GitLab ``glpat-``, Slack ``xox?-`` and the secret path of ``hooks.slack.com``
webhook URLs, Stripe ``sk_live_``/``rk_``/``pk_``/``whsec_``, Google ``AIza`` and ``ya29.`` OAuth tokens,
SendGrid ``SG.``, npm ``npm_``, ``sk-`` keys, and the others listed at ``_VENDOR_KEY``), ``SSWS`` (Okta) and
``ApiKey`` credentials, and 13-19 digit card numbers (spaces or dashes allowed) starting with 2-6
(Mastercard, Visa, Amex, Diners, Discover, JCB, UnionPay) and passing Luhn.
Only the matched part is replaced.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

__all__ = [
    "DEFAULT_DENY_KEYS",
    "DEFAULT_DENY_STEMS",
    "DEFAULT_DENY_WORDS",
    "REDACTED",
    "TRUNCATED",
    "clean",
    "is_card_number",
    "key_words",
    "looks_like_token",
    "luhn_valid",
    "mask_secrets",
    "normalise_key",
]

REDACTED: str = "[REDACTED]"
TRUNCATED: str = "[TRUNCATED]"

DEFAULT_DENY_STEMS: frozenset[str] = frozenset(
    {
        "password", "passwd", "passphrase", "passcode", "secret", "token", "apikey", "privatekey",
        "signingkey", "encryptionkey", "cardnumber", "creditcard", "ccnum", "authorization", "cookie",
        "csrf", "xsrf", "credential", "socialsecurity", "securityanswer", "backupcode", "recoverycode",
        "oauthverifier", "accountkey", "masterkey", "recoverykey", "sharedkey", "privkey", "licensekey",
        "seedphrase", "mnemonic", "magiclink", "oobcode", "subscriptionkey",
    }
)  # fmt: skip
DEFAULT_DENY_WORDS: frozenset[str] = frozenset(
    {
        "pass", "pwd", "pw", "pin", "otp", "totp", "hotp", "ssn", "cvv", "cvc", "cvv2", "cvc2", "csc", "ccv", "jwt",
        "hmac", "bearer", "signature", "psk", "answer",
    }
)  # fmt: skip
DEFAULT_DENY_KEYS: frozenset[str] = DEFAULT_DENY_STEMS | DEFAULT_DENY_WORDS | frozenset(
    {
        "code", "authcode", "mfacode", "otpcode", "verificationcode", "resetcode",
        "securitycode", "confirmationcode", "twofactorcode", "2facode", "codeverifier", "session", "sessionkey",
        "sessionid", "sessid", "phpsessid", "jsessionid", "auth", "salt", "hash", "sig", "pan", "iban",
        "clientsecret", "accesstoken", "refreshtoken", "idtoken", "authtoken", "setcookie", "xapikey",
        "newpassword", "oldpassword", "currentpassword", "passwordconfirmation", "cardnumber", "ssn",
        "sharedaccesskey", "activationcode", "activationkey", "unlockcode", "devicecode", "pairingcode", "invitecode",
        "assertion", "clientassertion", "samlresponse", "accesskey", "key", "refresh", "bindingcode", "usercode",
        "authreqid", "accesscode", "ticket", "samlart", "userkey", "appkey", "authkey",
    }
)  # fmt: skip
_MIN_CARD_DIGITS = 13
_SEPARATORS = str.maketrans("", "", "_-. []")  # brackets: nested form keys (card[number] is card_number)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# One regex per detector, each run only when a cheap substring test says it could match: a combined
# alternation is tried at every position and costs several times more on ordinary strings.
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----|.*\Z)", re.S)
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@:]*:[^\s/?#]*@")  # to the last @: p@ss
_JWT = re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*)?")
_SCHEME_CREDENTIALS = re.compile(r"\b((?i:bearer|basic|token|digest|ssws|apikey))[ \t]+([A-Za-z0-9\-._~+/]+=*)")
_SCHEMES = ("bearer", "basic", "token", "digest", "ssws", "apikey")  # SSWS: Okta; ApiKey: Elasticsearch
# Provider API keys with a recognisable prefix: AWS access key ids, GitHub, GitLab, Slack (tokens and
# webhook URLs' secret path), Stripe (API keys, webhook signing secrets), Google (API keys, OAuth access
# tokens), SendGrid, npm, OpenAI/Anthropic-style "sk-" keys.
_VENDOR_KEY = re.compile(
    r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_\-]{35}|npm_[A-Za-z0-9]{36}"
    r"|sk-(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{20,}|whsec_[A-Za-z0-9+/=]{24,}|ya29\.[0-9A-Za-z_\-]{20,}"
    r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}|(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_\-]{20,}"
    # Shopify, Hugging Face, Google client secrets and refresh tokens, PyPI, Slack app tokens, DigitalOcean,
    # GitLab's other tokens, Atlassian, Grafana, Vault, Doppler, Databricks, Notion, Linear, Postman, Square,
    # Mailgun, Telegram bots, Discord and Microsoft Teams webhook URLs' secret part
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}|hf_[A-Za-z0-9]{30,}|GOCSPX-[A-Za-z0-9_\-]{20,}|1//0[A-Za-z0-9_\-]{40,}"
    r"|pypi-AgE[A-Za-z0-9_\-]{50,}|xapp-[A-Za-z0-9\-]{20,}|xoxe(?:\.xox[bp])?-[A-Za-z0-9\-]{10,}|dop_v1_[a-f0-9]{64}"
    r"|gl(?:rt|dt|soat|ptt|ft|imt|cbt|oas|ffct)-[A-Za-z0-9_\-]{20,}|ATATT[A-Za-z0-9_\-=]{50,}|glsa_[A-Za-z0-9_]{32,}"
    r"|hvs\.[A-Za-z0-9_\-]{24,}|dp\.(?:st|ct|sa|scim|audit|pt)\.[A-Za-z0-9_.\-]{40,}|dapi[a-f0-9]{32}"
    r"|ntn_[A-Za-z0-9]{40,}|lin_api_[A-Za-z0-9]{40}|PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}|sq0csp-[A-Za-z0-9_\-]{40,}"
    r"|EAAA[A-Za-z0-9_\-]{60,}|key-[a-f0-9]{32}|[0-9]{8,10}:AA[A-Za-z0-9_\-]{33}"
    r"|(?<=discord\.com/api/webhooks/)[0-9]+/[A-Za-z0-9_\-]{60,}|(?<=discordapp\.com/api/webhooks/)[0-9]+/[A-Za-z0-9_\-]{60,}"
    r"|(?<=webhook\.office\.com/webhookb2/)[A-Za-z0-9@\-/]{20,})"
)
_VENDOR_PREFIXES = (
    "AKIA", "ASIA", "gh", "github_pat_", "gl", "xox", "k_live_", "k_test_", "AIza", "npm_", "sk-", "whsec_",
    "ya29.", "SG.", "hooks.slack.com/", "shp", "hf_", "GOCSPX-", "1//0", "pypi-", "xapp-", "dop_v1_", "ATATT", "hvs.",
    "dp.", "dapi", "ntn_", "lin_api_", "PMAK-", "sq0csp-", "EAAA", "key-", ":AA", "/api/webhooks/", "webhookb2/",
)  # fmt: skip
_VENDOR_GATE = re.compile("|".join(map(re.escape, _VENDOR_PREFIXES)))  # one scan, not one per prefix
_SHORTEST_VENDOR_KEY = 20  # every provider's shortest key but Slack's
_SHORTEST_SLACK_TOKEN = 15  # "xoxb-" and 10 characters: the shortest key _VENDOR_KEY matches
_DIGIT_RUN = re.compile(r"[0-9][0-9 \-]{11,}[0-9]")
_CARD = re.compile(r"(?<![0-9])[0-9](?:[ \-]?[0-9]){12,18}(?![0-9])")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOKEN_SEGMENT = re.compile(r"^[A-Za-z0-9_\-~.=:]{20,}$")  # ":" joins the parts of Django's signed values
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


def _fold(key: str) -> str:
    """Non-ASCII keys: compatibility forms folded (fullwidth letters) and invisible format characters removed."""
    if key.isascii():
        return key
    return "".join(char for char in unicodedata.normalize("NFKC", key) if unicodedata.category(char) != "Cf")


def normalise_key(key: str) -> str:
    """Return ``key`` lower-cased without ``_``, ``-``, ``.`` or spaces (``New-Password`` -> ``newpassword``)."""
    return _fold(key).lower().translate(_SEPARATORS)


def key_words(key: str) -> list[str]:
    """Split a key into lower-cased words on separators and camelCase (``newPIN_code`` -> new, pin, code)."""
    return [word.lower() for word in _WORDS.findall(_fold(key))]


def clean(value: str) -> str:
    """Return ``value`` without C0 controls other than tab and newline, lone surrogates replaced by U+FFFD."""
    if value.isprintable():  # fast path: no control characters and no surrogates
        return value
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if _CONTROL.search(value) is not None:
        value = _CONTROL.sub("", value)
    return value


def mask_secrets(value: str) -> str:
    """Replace every detector hit in ``value`` with ``REDACTED``, keeping the rest of the string.

    ``value`` must already be :func:`clean` (no lone surrogates).
    """
    if "-----BEGIN " in value:
        value = _PEM.sub(REDACTED, value)
    if "://" in value:
        value = _URL_CREDENTIALS.sub(_url_credentials, value)
    if "eyJ" in value:
        value = _JWT.sub(REDACTED, value)
    if " " in value or "\t" in value:
        lowered = value.lower()
        if any(scheme in lowered for scheme in _SCHEMES):
            value = _SCHEME_CREDENTIALS.sub(_scheme_credentials, value)
    if len(value) >= _SHORTEST_VENDOR_KEY:
        if _VENDOR_GATE.search(value) is not None:
            value = _VENDOR_KEY.sub(REDACTED, value)
    elif len(value) >= _SHORTEST_SLACK_TOKEN and "xox" in value:  # cheaper than the gate on short strings
        value = _VENDOR_KEY.sub(REDACTED, value)
    if len(value) >= _MIN_CARD_DIGITS:
        data = value.encode("utf-8")
        if len(data) - len(data.translate(None, b"0123456789")) >= _MIN_CARD_DIGITS:
            value = _DIGIT_RUN.sub(_cards, value)
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
    """Whether a path segment looks like a credential: a JWT, a 16+ hex run, 20+ mixed-case-and-digit chars
    (colons allowed, as in Django's signed values), or 32+ letters and digits without a separator.

    Canonical UUIDs and slugs (``my-first-blog-post-2024``) are not tokens.
    """
    if len(segment) < 20 or _TOKEN_SEGMENT.match(segment) is None or _UUID.match(segment) is not None:
        return False
    if segment.startswith("eyJ"):
        return True
    hex_run = _HEX_RUN.search(segment)
    if hex_run is not None and any(c.isdigit() for c in hex_run.group()) and any(c.isalpha() for c in hex_run.group()):
        return True
    has_digit = any(c.isdigit() for c in segment)
    if len(segment) >= 32 and segment.isalnum() and has_digit and not segment.isdigit():
        return True  # one long run of letters and digits (allauth's 64-character keys): slugs have separators
    return any(c.isupper() for c in segment) and any(c.islower() for c in segment) and has_digit


def _url_credentials(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED + "@"


def _scheme_credentials(match: re.Match[str]) -> str:
    scheme, credentials = match.group(1), match.group(2)
    if scheme.lower() == "basic":  # only base64 of "user:password" counts, so "Basic plan" stays
        try:
            secret = b":" in base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            secret = False
    else:  # 8+ characters with a digit or punctuation, or 20+: "Bearer of bad news" stays
        secret = len(credentials) >= 8 and (
            len(credentials) >= 20 or any(c.isdigit() or c in "._~+/-=" for c in credentials)
        )
    return f"{scheme} {REDACTED}" if secret else match.group()


def is_card_number(digits: str) -> bool:
    """Whether 13-19 digits look like a payment card: a major network's first digit (2-6) and Luhn-valid.

    The first-digit rule keeps millisecond timestamps (``17...``) and most phone and order numbers.
    """
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def _card(match: re.Match[str]) -> str:
    digits = match.group().replace(" ", "").replace("-", "")
    return REDACTED if is_card_number(digits) else match.group()


def _cards(run: re.Match[str]) -> str:
    return _CARD.sub(_card, run.group())
