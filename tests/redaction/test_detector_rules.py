"""Every rule of the detectors, one at a time: each deny-list word, each provider's shortest key, the card bounds.

A list of rules is only as strong as its weakest entry: these tests name each entry (so deleting one fails a test),
and test each length rule at its boundary (so a bound moved by one fails a test). The values come from the
providers' formats and from what a client sends, never from the constants under test.
"""

from __future__ import annotations

import pytest

from audit_middleware.redaction.detectors import REDACTED, is_card_number, mask_secrets
from audit_middleware.redaction.redactor import Redactor


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


# -- deny-lists: each entry on its own ----------------------------------------------------------------

# Stems are matched anywhere in the key: each one inside a longer key, between other words.
STEMS = [
    "password", "passwd", "passphrase", "passcode", "secret", "token", "apikey", "privatekey", "signingkey",
    "encryptionkey", "cardnumber", "creditcard", "ccnum", "authorization", "cookie", "csrf", "xsrf", "credential",
    "socialsecurity", "securityanswer", "backupcode", "recoverycode", "oauthverifier", "accountkey", "masterkey",
    "recoverykey", "sharedkey", "privkey", "licensekey", "seedphrase", "mnemonic", "magiclink", "oobcode",
    "subscriptionkey",
]  # fmt: skip


@pytest.mark.parametrize("stem", STEMS)
def test_each_stem_is_denied_anywhere_in_a_key(redactor: Redactor, stem: str) -> None:
    key = f"old_{stem}_value"
    assert redactor.mapping({key: "s3cr3t-value", "other": "kept"}) == {key: REDACTED, "other": "kept"}


# Words are matched as a whole word of the key (split on separators and camelCase).
WORDS = [
    "pass", "pwd", "pw", "pin", "otp", "totp", "hotp", "ssn", "cvv", "cvc", "csc", "ccv", "jwt", "hmac", "bearer",
    "signature", "psk", "answer",
]  # fmt: skip


@pytest.mark.parametrize("word", WORDS)
def test_each_word_is_denied_as_a_word_of_a_key(redactor: Redactor, word: str) -> None:
    for key in (f"my_{word}", f"my{word.capitalize()}", word):
        assert redactor.is_sensitive_key(key), key


# Whole keys: denied as the entire key (as a client writes it, without separators, in any case).
WHOLE_KEYS = [
    "code", "authcode", "mfacode", "otpcode", "verificationcode", "resetcode", "securitycode", "confirmationcode",
    "twofactorcode", "2facode", "codeverifier", "session", "sessionkey", "sessionid", "sessid", "phpsessid",
    "jsessionid", "auth", "salt", "hash", "sig", "pan", "iban", "sharedaccesskey", "activationcode", "activationkey",
    "unlockcode", "devicecode", "pairingcode", "invitecode", "assertion", "clientassertion", "samlresponse",
    "accesskey", "key", "refresh", "bindingcode", "usercode", "authreqid", "accesscode", "ticket", "samlart",
    "userkey", "appkey", "authkey",
]  # fmt: skip


@pytest.mark.parametrize("key", WHOLE_KEYS)
def test_each_whole_key_is_denied(redactor: Redactor, key: str) -> None:
    assert redactor.mapping({key: "v4lue", key.upper(): "v4lue"}) == {key: REDACTED, key.upper(): REDACTED}


@pytest.mark.parametrize("key", ["country_code", "zip_code", "key_id", "keyboard", "session_count", "hash_algorithm"])
def test_a_whole_key_rule_does_not_spread_to_longer_keys(redactor: Redactor, key: str) -> None:
    assert not redactor.is_sensitive_key(key)


# -- provider keys: the shortest key of each format, alone and in free text ---------------------------


def fill(length: int, alphabet: str = "Ab1") -> str:
    """``length`` characters that contain no other provider's prefix."""
    return (alphabet * length)[:length]


HEX = "0a1b2c3d4e5f6789"

# (provider, the shortest key its format allows; for a fixed-length format, its only length)
VENDOR_KEYS = [
    ("AWS access key id", "AKIAIOSFODNN7EXAMPLE"),  # exactly 20: AKIA + 16
    ("AWS temporary key id", "ASIAY34FZKBOKMUTVV7A"),
    ("GitHub token", "ghp_" + fill(36)),
    ("GitHub fine-grained token", "github_pat_" + fill(22)),
    ("GitLab personal token", "glpat-" + fill(20)),
    ("Slack bot token", "xoxb-" + fill(10)),
    ("Stripe live secret key", "sk_live_" + fill(16)),
    ("Stripe test restricted key", "rk_test_" + fill(16)),
    ("Google API key", "AIza" + fill(35)),
    ("npm token", "npm_" + fill(36)),
    ("OpenAI-style key", "sk-" + fill(20)),
    ("Stripe webhook secret", "whsec_" + fill(24)),
    ("Google OAuth access token", "ya29." + fill(20)),
    ("SendGrid key", "SG." + fill(16) + "." + fill(16)),
    ("Shopify access token", "shpat_" + fill(32, HEX)),
    ("Shopify shared secret", "shpss_" + fill(32, HEX)),
    ("Shopify custom app token", "shpca_" + fill(32, HEX)),
    ("Shopify private app token", "shppa_" + fill(32, HEX)),
    ("Hugging Face token", "hf_" + fill(30)),
    ("Google client secret", "GOCSPX-" + fill(20)),
    ("Google refresh token", "1//0" + fill(40)),
    ("PyPI token", "pypi-AgE" + fill(50)),
    ("Slack app token", "xapp-" + fill(20)),
    ("Slack refresh token", "xoxe-" + fill(10)),
    ("Slack rotated token", "xoxe.xoxp-" + fill(10)),
    ("DigitalOcean token", "dop_v1_" + fill(64, HEX)),
    ("GitLab runner token", "glrt-" + fill(20)),
    ("GitLab deploy token", "gldt-" + fill(20)),
    ("GitLab OAuth app secret", "glsoat-" + fill(20)),
    ("GitLab pipeline trigger token", "glptt-" + fill(20)),
    ("GitLab feed token", "glft-" + fill(20)),
    ("GitLab incoming mail token", "glimt-" + fill(20)),
    ("GitLab CI build token", "glcbt-" + fill(20)),
    ("GitLab OAuth token", "gloas-" + fill(20)),
    ("GitLab feature flag token", "glffct-" + fill(20)),
    ("Atlassian API token", "ATATT" + fill(50)),
    ("Grafana service account token", "glsa_" + fill(32)),
    ("Vault service token", "hvs." + fill(24)),
    ("Doppler service token", "dp.st." + fill(40)),
    ("Doppler CLI token", "dp.ct." + fill(40)),
    ("Doppler service account token", "dp.sa." + fill(40)),
    ("Doppler SCIM token", "dp.scim." + fill(40)),
    ("Doppler audit token", "dp.audit." + fill(40)),
    ("Doppler personal token", "dp.pt." + fill(40)),
    ("Databricks token", "dapi" + fill(32, HEX)),
    ("Notion token", "ntn_" + fill(40)),
    ("Linear API key", "lin_api_" + fill(40)),
    ("Postman API key", "PMAK-" + fill(24, HEX) + "-" + fill(34, HEX)),
    ("Square OAuth secret", "sq0csp-" + fill(40)),
    ("Square access token", "EAAA" + fill(60)),
    ("Mailgun key", "key-" + fill(32, HEX)),
    ("Telegram bot token, 8-digit bot id", "12345678:AA" + fill(33)),
    ("Telegram bot token, 10-digit bot id", "1234567890:AA" + fill(33)),
]


@pytest.mark.parametrize(("provider", "key"), VENDOR_KEYS, ids=[provider for provider, _ in VENDOR_KEYS])
def test_the_shortest_key_of_each_provider_is_masked_whole(provider: str, key: str) -> None:
    assert mask_secrets(f"deploy with {key} now") == f"deploy with {REDACTED} now"
    assert mask_secrets(key) == REDACTED  # a bare key as a whole value (a form field, a header)


FIXED_LENGTH = (
    "AWS",
    "Google API",
    "npm",
    "Shopify",
    "DigitalOcean",
    "Databricks",
    "Linear",
    "Postman",
    "Mailgun",
    "Telegram",
)
OPEN_ENDED = [(provider, key) for provider, key in VENDOR_KEYS if not provider.startswith(FIXED_LENGTH)]


@pytest.mark.parametrize(("provider", "key"), OPEN_ENDED, ids=[provider for provider, _ in OPEN_ENDED])
def test_a_long_key_of_each_open_ended_format_is_masked_whole(provider: str, key: str) -> None:
    longer = key + fill(40)
    assert mask_secrets(f"deploy with {longer} now") == f"deploy with {REDACTED} now"


WEBHOOKS = [
    ("Slack service webhook", "https://hooks.slack.com/services/" + fill(20), "https://hooks.slack.com/"),
    ("Slack workflow webhook", "https://hooks.slack.com/workflows/" + fill(20), "https://hooks.slack.com/"),
    ("Slack trigger webhook", "https://hooks.slack.com/triggers/" + fill(20), "https://hooks.slack.com/"),
    ("Discord webhook", "https://discord.com/api/webhooks/123/" + fill(60), "https://discord.com/api/webhooks/"),
    ("Discord legacy", "https://discordapp.com/api/webhooks/1/" + fill(60), "https://discordapp.com/api/webhooks/"),
    (
        "Teams webhook",
        "https://x.webhook.office.com/webhookb2/" + fill(20),
        "https://x.webhook.office.com/webhookb2/",
    ),
]


@pytest.mark.parametrize(("provider", "url", "kept"), WEBHOOKS, ids=[provider for provider, _, _ in WEBHOOKS])
def test_the_secret_part_of_each_webhook_url_is_masked(provider: str, url: str, kept: str) -> None:
    assert mask_secrets(f"hook {url} set") == f"hook {kept}{REDACTED} set"


def test_a_bare_slack_token_of_the_shortest_form_is_masked() -> None:
    # 15 characters: shorter than most keys, so a length gate in front of the pattern must still let it through
    assert mask_secrets("xoxb-" + fill(10)) == REDACTED
    assert mask_secrets("AKIAIOSFODNN7EXAMPLE") == REDACTED  # a bare 20-character AWS key id


# -- HTTP credentials -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "Digest", "SSWS", "ApiKey", "bearer", "TOKEN"])
def test_each_credential_scheme_masks_its_credential(scheme: str) -> None:
    assert mask_secrets(f"{scheme} abc12345") == f"{scheme} {REDACTED}"  # 8 characters with a digit: the shortest
    assert mask_secrets(f"{scheme}\tabc12345") == f"{scheme} {REDACTED}"  # a tab separates as well as a space


def test_basic_credentials_are_masked_by_their_shape() -> None:
    assert mask_secrets("Basic YWxpY2U6aHVudGVyMg==") == f"Basic {REDACTED}"  # alice:hunter2
    assert mask_secrets("Basic\tYWxpY2U6aHVudGVyMg==") == f"Basic {REDACTED}"
    assert mask_secrets("Basic plan") == "Basic plan"


@pytest.mark.parametrize(
    "text",
    [
        "Bearer abc1234",  # 7 characters: too short to be told from prose
        "Bearer of bad news",
        "Token ring",
    ],
)
def test_scheme_words_in_prose_are_kept(text: str) -> None:
    assert mask_secrets(text) == text


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        ("abcdefghijklmnopqrst", "20 letters: long enough without a digit"),
        ("abc.defg", "8 characters with punctuation"),
        ("abcdefg1", "8 characters with a digit"),
    ],
)
def test_a_bearer_credential_is_masked_at_each_threshold(credential: str, why: str) -> None:
    assert mask_secrets(f"Bearer {credential}") == f"Bearer {REDACTED}", why


# -- card numbers: the bounds of the length rule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "network"),
    [
        ("4222222222222", "Visa, 13 digits: the shortest card"),
        ("4111111111111111", "Visa, 16 digits"),
        ("378282246310005", "Amex, 15 digits"),
        ("6011000000000000001", "19 digits: the longest card"),
        ("6221260000000000001", "UnionPay, 19 digits"),
    ],
)
def test_cards_of_every_length_from_13_to_19_digits_are_masked(number: str, network: str) -> None:
    assert is_card_number(number), network
    assert mask_secrets(f"card {number} used") == f"card {REDACTED} used", network
    assert mask_secrets(number) == REDACTED, network
    spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    assert mask_secrets(f"card {spaced} used") == f"card {REDACTED} used", network


@pytest.mark.parametrize(
    ("digits", "why"),
    [
        ("422222222222", "12 digits: too short for a card"),
        ("42222222222222222228", "20 digits: too long for a card"),
        ("1734567890123", "a millisecond timestamp: no card network starts with 1"),
        ("4111111111111112", "fails Luhn"),
    ],
)
def test_digit_runs_that_are_not_cards_are_kept(digits: str, why: str) -> None:
    assert mask_secrets(f"ref {digits} ok") == f"ref {digits} ok", why


def test_a_20_digit_run_is_no_card_even_when_it_passes_luhn() -> None:
    assert not is_card_number("42222222222222222228")


# -- credentials in prose and odd spellings --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Token exchanges happen nightly",  # 9 letters, no digit or punctuation: a word
        "Basic plan2024 upgrade",  # valid base64, but not of user:password
    ],
)
def test_credential_schemes_in_prose_keep_their_words(text: str) -> None:
    assert mask_secrets(text) == text


def test_a_text_naming_every_scheme_still_has_its_credential_masked() -> None:
    text = "Basic, Digest, SSWS and ApiKey are schemes; use Token or Bearer abc12345"
    assert mask_secrets(text) == f"Basic, Digest, SSWS and ApiKey are schemes; use Token or Bearer {REDACTED}"


def test_an_invisible_character_inside_a_stem_does_not_hide_it(redactor: Redactor) -> None:
    assert redactor.is_sensitive_key("sec\u200bret")  # a zero-width space (format character) is dropped
    assert redactor.is_sensitive_key("api\u2060key")  # a word joiner too


# -- token-looking path segments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "why"),
    [
        ("Ab1Ab1Ab1Ab1Ab1Ab1Ab", "20 characters of mixed case and digits: the shortest token"),
        ("abcdefghijklmnopqrstuvwxyz012345", "32 lower-case letters and digits without a separator"),
        ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "a JWT's first segment"),
        ("eyJabcdefghijklmnopqrstu", "base64 of a JSON object ('{\"'), digits or not"),
        ("user-0a1b2c3d4e5f6789", "a run of 16 hex digits (half an md5, a reset code)"),
    ],
)
def test_token_looking_path_segments_are_masked(redactor: Redactor, segment: str, why: str) -> None:
    assert redactor.path(f"/confirm/{segment}") == f"/confirm/{REDACTED}", why


@pytest.mark.parametrize(
    ("segment", "why"),
    [
        ("Ab1Ab1Ab1Ab1Ab1Ab1A", "19 characters: too short to tell from a name"),
        ("abcdefghijklmnopqrstuvwxyz01234", "31 lower-case letters and digits"),
        ("Alice.Smith2024@example.com", "an e-mail address: '@' is no token character"),
        ("my-first-blog-post-2024-edition", "a slug"),
        ("5B0C2A4E-8f1d-4C55-9a3e-2F6B7C8D9E01", "a UUID, whatever the case of its letters, is an id"),
        ("5b0c2a4e-8f1d-4c55-9a3e-2f6b7c8d9e01", "a canonical UUID"),
    ],
)
def test_ordinary_path_segments_are_kept(redactor: Redactor, segment: str, why: str) -> None:
    assert redactor.path(f"/users/{segment}") == f"/users/{segment}", why
