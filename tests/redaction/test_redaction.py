"""Redaction rules: keys, value detectors, string cleaning, headers, query, URL, path, processor chain."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest

from audit_middleware.errors import ConfigurationError
from audit_middleware.redaction.detectors import luhn_valid, normalise_key
from audit_middleware.redaction.redactor import (
    DEFAULT_CAPTURED_HEADERS,
    DEFAULT_DENY_KEYS,
    REDACTED,
    TRUNCATED,
    RedactionConfig,
    Redactor,
    SkipAudit,
    build_chain,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7V\nabcDEF==\n-----END RSA PRIVATE KEY-----"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


# -- key matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        # password family, every naming style
        "password", "Password", "PASSWORD", "passwd", "pwd", "pass", "new_password", "newPassword", "New-Password",
        "old_password", "current_password", "passwordConfirmation", "password_confirmation", "password2",
        "user.password", "confirm password", "passphrase", "passcode", "userPass",
        # secrets and tokens
        "secret", "client_secret", "clientSecret", "token", "access_token", "accessToken", "refresh_token",
        "id_token", "auth_token", "X-Auth-Token", "csrf_token", "csrfmiddlewaretoken", "_xsrf", "XSRF-TOKEN",
        "api_key", "apikey", "apiKey", "x-api-key", "X-API-KEY", "private_key", "privateKey", "secret_key",
        "credentials",
        # HTTP credentials
        "authorization", "Authorization", "proxy-authorization", "cookie", "set-cookie", "Set-Cookie",
        "session", "sessionid", "session_id", "sessionId", "PHPSESSID", "JSESSIONID",
        # one-time codes
        "otp", "OTP", "totp", "mfa_code", "otp_code", "verification_code", "code", "recovery_code",
        "code_verifier",
        # cards and identity numbers
        "pin", "pw", "new_pw", "card_pin", "cardPIN", "cvv", "cvc", "CVV2", "card_number", "cardNumber", "cardnumber",
        "credit_card", "creditCardNumber", "ccnum", "cc_number", "ssn", "SSN", "social_security_number", "iban",
        # Unicode disguises: fullwidth letters, zero-width characters
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "pass\u200bword", "card\u00adPIN",
        # integrity material
        "signature", "salt", "hash", "password_hash",
        # signatures of signed URLs and webhooks, as a word of the key
        "X-Amz-Signature", "X-Goog-Signature", "webhook_signature", "requestSignature",
        # credentials named for what they carry, and second factors
        "jwt", "id_jwt", "hmac", "hmacDigest", "bearer", "oauth_verifier", "ccv", "backup_codes", "recovery_codes",
        "security_answer", "securityAnswers",
        # nested form keys in bracket notation (Rails, PHP, qs): card[number] is card_number
        "card[number]", "payment[card][number]", "user[security_answer]",
        # cloud storage keys
        "AccountKey", "azure_storage_account_key", "SharedAccessKey",
        # keys and codes that are credentials by what they are for
        "master_key", "recovery_key", "pre_shared_key", "psk", "priv_key", "license_key", "access_key", "seed_phrase",
        "mnemonic", "magic_link", "activation_code", "activation_key", "unlock_code", "device_code", "pairing_code",
        "invite_code",
        # a bare "key": dj-rest-auth email verification, allauth headless password reset, ?key= API keys
        "key", "Key",
        # SimpleJWT's refresh request body
        "refresh",
        # one-time codes and tickets under their providers' names: Firebase oobCode, Auth0 oob_code and
        # binding_code, device flow user_code, CIBA auth_req_id, CAS ticket, SAML artifact
        "oobCode", "oob_code", "binding_code", "user_code", "auth_req_id", "access_code", "ticket", "SAMLart",
        # API keys in query strings: Azure API Management, 3scale, and the like; security answers
        "subscription-key", "user_key", "app_key", "auth_key", "answer", "answer_1",
        # bearer assertions (RFC 7521 token requests, SAML)
        "assertion", "client_assertion", "SAMLResponse",
    ],
)  # fmt: skip
def test_sensitive_keys_are_recognised(redactor: Redactor, key: str) -> None:
    assert redactor.is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    [
        # short ambiguous words only match whole words
        "spinner", "pinned", "opinion", "passport_country", "passportNumber", "passenger", "compass", "bypass",
        "topic", "shipping", "ssnake",
        # "code" only as the whole key
        "country_code", "zip_code", "postalCode", "language_code", "codec", "status_code",
        # ordinary profile and request fields
        "username", "email", "name", "first_name", "user_id", "id", "remember_me", "grant_type", "scope",
        "redirect_uri", "client_id", "state", "method", "session_count", "author", "authority", "hashtag",
        "description", "keyboard", "panel", "key_id", "keyName", "public_key",
    ],
)  # fmt: skip
def test_ordinary_keys_are_not_redacted(redactor: Redactor, key: str) -> None:
    assert not redactor.is_sensitive_key(key)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("newPassword", "newpassword"),
        ("new_password", "newpassword"),
        ("New-Password", "newpassword"),
        ("x.api key", "xapikey"),
        ("card[number]", "cardnumber"),
    ],
)
def test_normalise_key(key: str, expected: str) -> None:
    assert normalise_key(key) == expected


def test_default_deny_keys_are_normalised() -> None:
    assert all(normalise_key(key) == key for key in DEFAULT_DENY_KEYS)
    assert {"password", "token", "apikey", "code", "pin", "ssn"} <= DEFAULT_DENY_KEYS


def test_deny_keys_extend_the_defaults() -> None:
    redactor = Redactor(RedactionConfig(deny_keys=["employee-number", "*internal*"]))
    assert redactor.is_sensitive_key("employeeNumber")
    assert redactor.is_sensitive_key("my_internal_note")
    assert redactor.is_sensitive_key("password")
    assert not redactor.is_sensitive_key("employee")


def test_replace_deny_keys_drops_the_defaults() -> None:
    redactor = Redactor(RedactionConfig(deny_keys=["code"], replace_deny_keys=True))
    assert redactor.is_sensitive_key("code")
    assert not redactor.is_sensitive_key("password")
    assert not redactor.is_sensitive_key("pin")


def test_key_caches_stay_bounded(redactor: Redactor) -> None:
    for index in range(10_000):
        redactor.mapping({f"field{index}": 1})
    assert len(redactor._cache) <= 4096
    assert len(redactor._keys) <= 4096
    assert redactor.is_sensitive_key("password")
    assert redactor.mapping({"field9999": 1, "password": 2}) == {"field9999": 1, "password": REDACTED}


# -- mapping ----------------------------------------------------------------------------------------


def test_mapping_keeps_keys_and_replaces_secret_values(redactor: Redactor) -> None:
    data = {
        "username": "alice",
        "password": "hunter2",
        "profile": {"newPassword": "x", "address": {"zip_code": "12345", "pin": 1234}},
        "grants": [{"access_token": "abc"}, {"refresh_token": None}],
        "client_secret": {"nested": "whole value replaced"},
    }
    assert redactor.mapping(data) == {
        "username": "alice",
        "password": REDACTED,
        "profile": {"newPassword": REDACTED, "address": {"zip_code": "12345", "pin": REDACTED}},
        "grants": [{"access_token": REDACTED}, {"refresh_token": REDACTED}],
        "client_secret": REDACTED,
    }


@pytest.mark.parametrize(
    "pair",
    [
        {"name": "password", "value": "hunter2"},  # jQuery serializeArray, form builders
        {"type": "password", "value": "hunter2", "temporary": False},  # Keycloak credentials
        {"key": "api_key", "value": "hunter2"},
        {"Name": "client_secret", "Value": "hunter2"},
        {"field": "pin", "values": ["hunter2"]},
        {"op": "replace", "path": "password", "value": "hunter2"},  # SCIM 2.0 PatchOp
        {"op": "replace", "path": "/password", "value": "hunter2"},  # RFC 6902 JSON Patch
    ],
)
def test_a_secret_given_as_a_name_value_pair_is_redacted(redactor: Redactor, pair: dict[str, Any]) -> None:
    out = redactor.mapping({"fields": [{"name": "email", "value": "a@example.com"}, pair]})
    assert out["fields"][0] == {"name": "email", "value": "a@example.com"}
    assert "hunter2" not in repr(out)
    assert set(out["fields"][1]) == set(pair)  # keys kept, the name too: it says which secret was sent


def test_mapping_applies_value_detectors_under_any_key(redactor: Redactor) -> None:
    out = redactor.mapping({"note": f"my token is {JWT}", "list": ["Bearer abcdef0123456789"]})
    assert out == {"note": f"my token is {REDACTED}", "list": [f"Bearer {REDACTED}"]}


def test_mapping_redacts_luhn_valid_card_numbers_given_as_integers(redactor: Redactor) -> None:
    data = {"n": 4111111111111111, "m": 4111111111111112, "ts_ms": 1732579200004, "big": 10**30, "small": 42}
    assert redactor.mapping(data) == {**data, "n": REDACTED}


@pytest.mark.parametrize("value", [None, True, False, 1.5, 0, -3])
def test_mapping_keeps_plain_scalars(redactor: Redactor, value: Any) -> None:
    assert redactor.mapping({"value": value}) == {"value": value}


def test_mapping_caps_depth_with_a_marker() -> None:
    redactor = Redactor(RedactionConfig(max_depth=2))
    assert redactor.mapping({"a": {"b": {"c": 1}}, "l": [[1]]}) == {"a": {"b": TRUNCATED}, "l": [TRUNCATED]}


def test_mapping_caps_items_with_a_marker() -> None:
    redactor = Redactor(RedactionConfig(max_items=3))
    out = redactor.mapping({"d": {str(i): i for i in range(5)}, "l": list(range(5))})
    assert out["d"] == {"0": 0, "1": 1, "2": 2, TRUNCATED: 2}
    assert out["l"] == [0, 1, 2, f"{TRUNCATED} 2 more items"]


def test_mapping_bounds_strings_and_keys() -> None:
    redactor = Redactor(RedactionConfig(max_string=20))
    out = redactor.mapping({"k" * 50: "v" * 50})
    ((key, value),) = out.items()
    assert key == "k" * 20 + "..." + TRUNCATED
    assert value == "v" * 20 + "..." + TRUNCATED


def test_a_long_key_is_judged_before_it_is_cut() -> None:
    redactor = Redactor(RedactionConfig(max_string=20))
    out = redactor.mapping({"x" * 30 + "_password": "hunter2"})
    assert out == {"x" * 20 + "..." + TRUNCATED: REDACTED}


def test_mapping_converts_odd_values_to_bounded_strings(redactor: Redactor) -> None:
    out = redactor.mapping({1: b"\x00raw", "t": ("a", "b"), "o": object.__new__(type("Thing", (), {}))})
    assert out["1"] == "<4 bytes>"
    assert out["t"] == ["a", "b"]
    assert out["o"].startswith("<")
    json.dumps(out)


def test_mapping_of_a_deeply_nested_hostile_value_does_not_recurse_far(redactor: Redactor) -> None:
    value: Any = "leaf"
    for _ in range(5000):
        value = [value]
    out = redactor.mapping(value)
    depth = 0
    while isinstance(out, list):
        out = out[0]
        depth += 1
    assert out == TRUNCATED
    assert depth == 8


def test_allow_fields_keeps_only_those_top_level_fields(redactor: Redactor) -> None:
    data = {"email": "a@example.com", "password": "x", "bio": "hello", "extra": {"a": 1}}
    assert redactor.mapping(data, allow_fields=["email", "password"]) == {
        "email": "a@example.com",
        "password": REDACTED,
    }


def test_allow_fields_on_a_non_object_gives_an_empty_object(redactor: Redactor) -> None:
    assert redactor.mapping(["a", "b"], allow_fields=["a"]) == {}


def test_allowlist_mode_redacts_every_value_not_allowed() -> None:
    redactor = Redactor(RedactionConfig(allow_keys=["email", "remember_me"]))
    data = {"email": "a@example.com", "remember_me": True, "name": "Alice", "profile": {"email": "b@x", "age": 3}}
    assert redactor.mapping(data) == {
        "email": "a@example.com",
        "remember_me": True,
        "name": REDACTED,
        "profile": {"email": "b@x", "age": REDACTED},
    }


def test_allowlist_mode_never_keeps_a_denied_key() -> None:
    redactor = Redactor(RedactionConfig(allow_keys=["password"]))
    assert redactor.mapping({"password": "x"}) == {"password": REDACTED}


def test_detect_values_off_keeps_strings_but_still_redacts_keys() -> None:
    redactor = Redactor(RedactionConfig(detect_values=False))
    assert redactor.mapping({"note": JWT, "token": "x"}) == {"note": JWT, "token": REDACTED}
    assert redactor.text("a\x00" + JWT) == "a" + JWT


def test_tuples_and_other_mappings_are_walked_with_the_same_caps() -> None:
    from collections import OrderedDict

    redactor = Redactor(RedactionConfig(max_depth=2))
    data = OrderedDict(t=(("deep",),), pin=1)
    assert redactor.mapping(data) == {"t": [TRUNCATED], "pin": REDACTED}


# -- value detectors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # HTTP credentials
        ("Bearer abcdef0123456789", f"Bearer {REDACTED}"),
        ("header was bearer abc.def-ghi_jkl", f"header was bearer {REDACTED}"),
        ("token ghp_0123456789abcdef", f"token {REDACTED}"),
        ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {REDACTED}"),
        # JWT anywhere
        (JWT, REDACTED),
        (f"id={JWT}; next", f"id={REDACTED}; next"),
        (JWT.rsplit(".", 1)[0], REDACTED),
        # PEM private keys, whole or cut
        (f"key:\n{PEM}\ntrailer", f"key:\n{REDACTED}\ntrailer"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA", REDACTED),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----", REDACTED),
        # URL credentials
        ("postgres://app:s3cret@db.internal:5432/x", f"postgres://{REDACTED}@db.internal:5432/x"),
        ("see https://user:pw@example.com/path ok", f"see https://{REDACTED}@example.com/path ok"),
        # short strings still reach the detectors that can match them
        ("eyJabcd.efgh", REDACTED),
        ("a://u:p@h", f"a://{REDACTED}@h"),
        # provider API keys with a known prefix
        ("aws AKIAIOSFODNN7EXAMPLE ok", f"aws {REDACTED} ok"),
        ("ghp_" + "a1B2" * 9, REDACTED),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", REDACTED),
        ("glpat-abcdefghij0123456789", REDACTED),
        ("xoxb-123456789012-abcdefABCDEF", REDACTED),
        ("AIza" + "SyA-1234567890abcdefghijklmnopqrstu", REDACTED),
        ("npm_" + "a" * 36, REDACTED),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", REDACTED),
        ("github_pat_" + "a1" * 20, REDACTED),  # no "gh" inside: the prefix itself must be enough
        ("whsec_" + "A1b2" * 8, REDACTED),  # Stripe webhook signing secret
        ("ya29.a0AfH6SMBx" + "a1" * 30, REDACTED),  # Google OAuth access token
        ("SG." + "a1" * 11 + "." + "b2" * 21 + "c", REDACTED),  # SendGrid
        (
            "posting to https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx",
            f"posting to https://hooks.slack.com/{REDACTED}",
        ),
        # more providers' token formats
        ("shpat_" + "a1b2c3d4" * 4, REDACTED),  # Shopify
        ("hf_" + "aB1" * 11, REDACTED),  # Hugging Face
        ("GOCSPX-" + "aB1_" * 7, REDACTED),  # Google OAuth client secret
        ("1//0g" + "aB1-" * 12, REDACTED),  # Google refresh token
        ("pypi-AgE" + "aB1_" * 15, REDACTED),  # PyPI
        ("xapp-1-A0" + "12345abcde" * 3, REDACTED),  # Slack app-level token
        ("dop_v1_" + "0a1b2c3d" * 8, REDACTED),  # DigitalOcean
        ("glrt-" + "aB1_" * 6, REDACTED),  # GitLab runner token
        ("ATATT" + "3xFfGF0" * 9, REDACTED),  # Atlassian
        ("glsa_" + "aB1" * 11, REDACTED),  # Grafana service account
        ("hvs." + "aB1_" * 7, REDACTED),  # HashiCorp Vault
        ("dp.st.dev." + "aB1_" * 11, REDACTED),  # Doppler
        ("dapi" + "0a1b2c3d" * 4, REDACTED),  # Databricks
        ("ntn_" + "aB1" * 15, REDACTED),  # Notion
        ("lin_api_" + "aB1c" * 10, REDACTED),  # Linear
        ("PMAK-" + "0a1b2c" * 4 + "-" + "0a1b2c3d4e5f" * 2 + "0a1b2c3d4e", REDACTED),  # Postman
        ("sq0csp-" + "aB1_" * 11, REDACTED),  # Square
        ("key-" + "0a1b2c3d" * 4, REDACTED),  # Mailgun
        ("bot 123456789:AA" + "aB1_" * 8 + "c, ok", f"bot {REDACTED}, ok"),  # Telegram
        (
            "https://discord.com/api/webhooks/123456789012345678/" + "aB1_" * 17,
            f"https://discord.com/api/webhooks/{REDACTED}",
        ),
        (
            "https://acme.webhook.office.com/webhookb2/6f1c2f0e-8a5b@6f1c2f0e-8a5b/IncomingWebhook/0a1b2c3d4e5f/x",
            f"https://acme.webhook.office.com/webhookb2/{REDACTED}",
        ),
        ("header SSWS 00aB1cD2eF3gH4iJ5kL6", f"header SSWS {REDACTED}"),  # Okta
        ("ApiKey aB1cD2eF3gH4iJ5k==", f"ApiKey {REDACTED}"),  # Elasticsearch
        ("postgres://app:p@ss@word@db.internal/app", f"postgres://{REDACTED}@db.internal/app"),  # an unescaped @
        # connection strings: Azure storage and Service Bus keys
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=abc123==;EndpointSuffix=core.windows.net",
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={REDACTED};EndpointSuffix=core.windows.net",
        ),
        (
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abc123=",
            f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey={REDACTED}",
        ),
        # sensitive pairs of URLs and query strings inside free text
        ("see https://x.example/cb?code=abc&state=1", f"see https://x.example/cb?code={REDACTED}&state=1"),
        ("password=hunter2", f"password={REDACTED}"),
        ("retry with pin=1234 now", f"retry with pin={REDACTED} now"),
        ("a=1&client_secret=s&b=2", f"a=1&client_secret={REDACTED}&b=2"),
        # sensitive "key: value" fields inside free text: JSON or a Python dict kept as a string, GraphQL
        # inline arguments, YAML-like lines, one level of escaped JSON
        ('{"password":"hunter2","user":"al"}', f'{{"password":"{REDACTED}","user":"al"}}'),
        ('{"token": "a,b c", "n": 1}', f'{{"token": "{REDACTED}", "n": 1}}'),
        ("{'password': 'hunter2'}", f"{{'password': '{REDACTED}'}}"),
        (
            'mutation { login(email: "a@b.c", password: "hunter2") { token } }',
            f'mutation {{ login(email: "a@b.c", password: "{REDACTED}") {{ token }} }}',
        ),
        ("password: hunter2", f"password: {REDACTED}"),
        ("pin: 1234", f"pin: {REDACTED}"),
        ('{\\"password\\":\\"hun,ter2\\"}', f'{{\\"password\\":\\"{REDACTED}\\"}}'),
        ('{"password": "cut off', f'{{"password": "{REDACTED}'),
        ("key: sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", f"key: {REDACTED}"),  # a detector masked it first
        ("password: [REDACTED]hunter2", f"password: {REDACTED}"),  # only the exact marker counts as masked
        ('{"data":{"password":"hunter2"}}', f'{{"data":{{"password":"{REDACTED}"}}}}'),  # nested, kept as a string
        (
            'mutation { signup(input: {password: "hunter2"}) { ok } }',
            f'mutation {{ signup(input: {{password: "{REDACTED}"}}) {{ ok }} }}',
        ),
        # card numbers passing Luhn, with or without separators
        ("4111111111111111", REDACTED),
        ("card 4111 1111 1111 1111 exp 12/30", f"card {REDACTED} exp 12/30"),
        ("5500-0000-0000-0004", REDACTED),
        ("378282246310005", REDACTED),
        ("2221000000000009", REDACTED),
        ("6011111111111117", REDACTED),
    ],
)
def test_value_detectors_mask_only_the_secret(redactor: Redactor, value: str, expected: str) -> None:
    assert redactor.text(value) == expected
    assert redactor.text(expected) == expected  # masking what is masked changes nothing


@pytest.mark.parametrize(
    "value",
    [
        # prose that merely mentions a scheme
        "Bearer of bad news",
        "Basic plan",
        "Basic information about tokens",
        "token expired",
        # numbers that are not cards
        "4111111111111112",
        "12345678901234567890123",
        "+1 (555) 010-9999",
        "2024-01-31 12:00:00",
        "order 1234567890",
        "1732579200004",  # a Luhn-valid millisecond timestamp
        "7992739871300008",  # Luhn-valid, no card network starts with 7
        # URLs without a password, public keys, ordinary ids
        "https://user@example.com/x",
        "https://example.com/a:b@c",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----",
        "6f1c2f0e-8a5b-4c3d-9e7f-0a1b2c3d4e5f",
        "alice@example.com",
        "eyJ",
        "x=1&y=2",
        "spinner=3; passport=FR",
        "a == b",
        "ghost-writer-for-the-blog-post",
        "task-1234 is done",
        "AKIA is not a key",
        "sk-learn-is-a-python-library-name",
        "heyJude.singalong.tonight",
        "whsec_ is the prefix of Stripe signing secrets",
        "SG.2024 results are in",
        "https://hooks.slack.com/ is where webhooks go",
        "the key-value store",
        "hf_ is a prefix",
        "glass-doors-and-global-settings",
        "see discord.com/api/webhooks",
        # colons that are not a sensitive field
        "https://example.com:8443/x",
        "12:00:00",
        "note: remember the milk",
        '{"user": "al", "n": 1}',
        "ratio 3:4",
        "passport: FR",
        "listen on [::1]:8080",
    ],
)
def test_value_detectors_leave_ordinary_strings_alone(redactor: Redactor, value: str) -> None:
    assert redactor.text(value) == value


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("79927398713", True), ("4111111111111112", False), ("0", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


# -- string cleaning and bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\x00b", "ab"),
        ("a\x01\x07\x1b[31mb\x7f", "a[31mb"),
        ("keep\ttabs\nand newlines", "keep\ttabs\nand newlines"),
        ("cr\r\nlf", "cr\nlf"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("pair \U0001f600 kept", "pair \U0001f600 kept"),
        ("short", "short"),
        ("", ""),
    ],
)
def test_text_cleans_control_characters_and_surrogates(redactor: Redactor, value: str, expected: str) -> None:
    assert redactor.text(value) == expected


def test_text_caps_length_with_a_marker() -> None:
    redactor = Redactor(RedactionConfig(max_string=16))
    assert redactor.text("x" * 100) == "x" * 16 + "..." + TRUNCATED


def test_text_masks_a_secret_that_straddles_the_length_cap() -> None:
    redactor = Redactor(RedactionConfig(max_string=20))
    out = redactor.text("prefix " + JWT)
    assert out == "prefix " + REDACTED
    assert "eyJ" not in out


def test_text_masks_a_pem_key_longer_than_the_cap() -> None:
    redactor = Redactor(RedactionConfig(max_string=32))
    body = "-----BEGIN PRIVATE KEY-----\n" + "QUJD" * 3000 + "\n-----END PRIVATE KEY-----"
    assert redactor.text(body) == REDACTED


def test_text_output_is_always_storable(redactor: Redactor) -> None:
    hostile = "\x00\ud800\udfff" * 2000 + "\x1b" * 10
    out = redactor.text(hostile)
    out.encode("utf-8")
    assert "\x00" not in out
    assert len(out) <= 512 + len("..." + TRUNCATED)


# -- headers ----------------------------------------------------------------------------------------


def test_headers_keep_only_captured_names_lower_cased(redactor: Redactor) -> None:
    raw = [(b"User-Agent", b"curl/8"), (b"X-Custom", b"nope"), (b"Content-Type", b"application/json")]
    assert redactor.headers(raw) == {"user-agent": "curl/8", "content-type": "application/json"}


def test_headers_join_repeated_values(redactor: Redactor) -> None:
    raw = [(b"x-forwarded-for", b"1.1.1.1"), (b"X-Forwarded-For", b"2.2.2.2, 3.3.3.3")]
    assert redactor.headers(raw) == {"x-forwarded-for": "1.1.1.1, 2.2.2.2, 3.3.3.3"}


@pytest.mark.parametrize(
    "name",
    ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token",
     "x-csrf-token", "x-session"],
)  # fmt: skip
def test_credential_headers_are_always_redacted_when_captured(name: str) -> None:
    redactor = Redactor(RedactionConfig(captured_headers=[name], replace_deny_keys=True, deny_keys=["unrelated"]))
    assert redactor.headers([(name.encode(), b"Basic dXNlcjpwYXNz")]) == {name: REDACTED}


def test_default_captured_headers_include_authorization_redacted(redactor: Redactor) -> None:
    assert "authorization" in DEFAULT_CAPTURED_HEADERS
    assert redactor.headers([(b"Authorization", b"Bearer abcdef0123456789")]) == {"authorization": REDACTED}
    assert redactor.headers([(b"Cookie", b"session=abc")]) == {}


def test_header_values_are_latin1_cleaned_and_bounded(redactor: Redactor) -> None:
    out = redactor.headers([(b"user-agent", b"caf\xe9\x00" + b"A" * 2000)])
    assert out["user-agent"].startswith("caf\xe9A")
    assert out["user-agent"].endswith(TRUNCATED)


def test_referer_goes_through_url_redaction(redactor: Redactor) -> None:
    out = redactor.headers([(b"referer", b"https://u:p@app.example/reset?token=abc&next=/home")])
    assert out == {"referer": f"https://app.example/reset?token={REDACTED}&next=/home"}


def test_a_token_in_the_referer_path_is_masked(redactor: Redactor) -> None:
    # Flask-Security serves its reset form at /reset/<token> and posts back there: the browser's Referer
    # carries the token (an itsdangerous one, no shape a value detector knows) while the path is masked
    token = "WyIwODJlYjQ3MTBmIl0.ZxYzAb.TCyebFS20-aK3mQ9zLr"
    out = redactor.headers([(b"referer", f"https://app.example.com/reset/{token}?next=/home".encode())])
    assert out == {"referer": f"https://app.example.com/reset/{REDACTED}?next=/home"}
    kept = "https://app.example.com/blog/my-first-blog-post-about-2024"
    assert redactor.headers([(b"referer", kept.encode())]) == {"referer": kept}


def test_repeated_header_values_give_the_same_result_from_the_cache(redactor: Redactor) -> None:
    raw = [(b"user-agent", b"agent 4111 1111 1111 1111"), (b"referer", b"https://a:b@x.example/?token=t")]
    first = redactor.headers(raw)
    assert (
        redactor.headers(raw)
        == first
        == {
            "user-agent": f"agent {REDACTED}",
            "referer": f"https://x.example/?token={REDACTED}",
        }
    )


def test_header_cache_stays_bounded(redactor: Redactor) -> None:
    for index in range(3000):
        redactor.headers([(b"x-request-id", str(index).encode())])
    assert all(len(cache) <= 1024 for cache in redactor._header_cache.values())
    assert redactor.headers([(b"x-request-id", b"2999")]) == {"x-request-id": "2999"}


def test_captured_headers_config_is_case_insensitive() -> None:
    redactor = Redactor(RedactionConfig(captured_headers=["X-Tenant"]))
    assert redactor.headers([(b"x-tenant", b"acme")]) == {"x-tenant": "acme"}


# -- query string -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"a=1&b=2", {"a": "1", "b": "2"}),
        (b"a=1&a=2&a=3", {"a": ["1", "2", "3"]}),
        (b"flag&empty=", {"flag": "", "empty": ""}),
        ("q=caf%C3%A9+au+lait", {"q": "café au lait"}),
        (b"bad=%ff%fe", {"bad": "\ufffd\ufffd"}),
        (b"token=abc&next=%2Fhome", {"token": REDACTED, "next": "/home"}),
        (b"api_key=1&api_key=2", {"api_key": REDACTED}),
        (f"id_token={JWT}&state=xyz".encode(), {"id_token": REDACTED, "state": "xyz"}),
        (f"redirect={JWT}".encode(), {"redirect": REDACTED}),
        (b"n=%00x", {"n": "x"}),
        ("s=%41\ud800", {"s": "A\ufffd"}),
    ],
)
def test_query(redactor: Redactor, raw: bytes | str, expected: dict[str, Any]) -> None:
    assert redactor.query(raw) == expected


def test_bracketed_form_keys_are_judged_like_their_flat_spelling(redactor: Redactor) -> None:
    body = b"user%5Bemail%5D=a%40example.com&user%5Bsecurity_answer%5D=fluffy&card%5Bnumber%5D=12345678"
    out = redactor.body("application/x-www-form-urlencoded", body, complete=True)
    assert out["fields"] == {
        "user[email]": "a@example.com",
        "user[security_answer]": REDACTED,
        "card[number]": REDACTED,
    }


def test_query_caps_number_of_fields() -> None:
    redactor = Redactor(RedactionConfig(max_items=2))
    assert redactor.query(b"a=1&b=2&c=3&d=4") == {"a": "1", "b": "2", TRUNCATED: 2}


# -- url --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a?b=1", "https://example.com/a?b=1"),
        ("https://user:pw@example.com/a", "https://example.com/a"),
        ("https://user@example.com", "https://example.com"),
        ("https://example.com/cb?code=abc&state=s", f"https://example.com/cb?code={REDACTED}&state=s"),
        ("https://example.com/cb#access_token=abc&x=1", f"https://example.com/cb#access_token={REDACTED}&x=1"),
        ("/relative?password=x", f"/relative?password={REDACTED}"),
        ("https://[::1", "https://[::1"),
        ("not a url", "not a url"),
        (f"https://example.com/{JWT}", f"https://example.com/{REDACTED}"),
        # a presigned URL grants access until it expires: its signature and credential are secrets
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261126&X-Amz-Expires=60"
            "&X-Amz-Signature=9f2b6c",
            f"https://b.s3.amazonaws.com/k?X-Amz-Credential={REDACTED}&X-Amz-Expires=60&X-Amz-Signature={REDACTED}",
        ),
    ],
)
def test_url(redactor: Redactor, url: str, expected: str) -> None:
    assert redactor.url(url) == expected


# -- path -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "template", "expected"),
    [
        # a known template masks sensitive parameters only
        ("/reset/abc123", "/reset/{token}", f"/reset/{REDACTED}"),
        ("/users/42/reset/xyz", "/users/{user_id}/reset/{reset_token:str}", f"/users/42/reset/{REDACTED}"),
        ("/users/42", "/users/{user_id}", "/users/42"),
        ("/files/a/b/c", "/files/{secret:path}", f"/files/{REDACTED}"),
        # mounted apps, trailing slashes, spans followed by more parameters
        ("/api/v1/reset/abc123", "/reset/{token}", f"/api/v1/reset/{REDACTED}"),
        ("/reset/abc123/", "/reset/{token}/", f"/reset/{REDACTED}/"),
        ("/reset/abc123/", "/reset/{token}", f"/reset/{REDACTED}/"),
        ("/api/files/a/b/sig/xyz", "/files/{name:path}/sig/{signature}", f"/api/files/a/b/sig/{REDACTED}"),
        ("/api/files/a/b/c", "/files/{name:path}", "/api/files/a/b/c"),
        ("/api/files/a/b/c", "/files/{private_key:path}", f"/api/files/{REDACTED}"),
        ("/files", "/files/{secret:path}/x/{token}", "/files"),
        ("/api/u/tok123/files/a/b", "/u/{token}/files/{name:path}", f"/api/u/{REDACTED}/files/a/b"),
        ("/x", "/a/b/{token}", "/x"),
        ("/", "/", "/"),
        # without a template, token-looking segments are masked
        ("/reset/3f9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d", None, f"/reset/{REDACTED}"),
        ("/verify/Zx8kP2mQ9rT4vW7yB1nC5dF", None, f"/verify/{REDACTED}"),
        (f"/auth/{JWT}/done", None, f"/auth/{REDACTED}/done"),
        ("/reset/MQ/bv2hx3-0a1b2c3d4e5f60718293a4b5", None, f"/reset/MQ/{REDACTED}"),
        # ordinary paths are kept
        ("/users/6f1c2f0e-8a5b-4c3d-9e7f-0a1b2c3d4e5f", None, "/users/6f1c2f0e-8a5b-4c3d-9e7f-0a1b2c3d4e5f"),
        ("/blog/my-first-blog-post-about-2024", None, "/blog/my-first-blog-post-about-2024"),
        # django-allauth e-mail confirmation keys: signed (colons), or 64 lower-case characters
        ("/accounts/confirm-email/NDI:1xWU5z:oeNB4s4VqJmXkT2bYcWd9fGh/", None, f"/accounts/confirm-email/{REDACTED}/"),
        ("/accounts/confirm-email/" + "nqer8vzwapyl37" * 4 + "abcdefgh/", None, f"/accounts/confirm-email/{REDACTED}/"),
        ("/v1/projects/p1/locations/us:batchGet", None, "/v1/projects/p1/locations/us:batchGet"),
        ("/archive/2024-01-31T12:00:00Z", None, "/archive/2024-01-31T12:00:00Z"),
        # custom methods name the action: a path is no "key: value" text
        ("/v1/tokens:revoke", None, "/v1/tokens:revoke"),
        ("/v1/users/me/password:reset", None, "/v1/users/me/password:reset"),
        ("/api/v1/users/123/orders", None, "/api/v1/users/123/orders"),
        ("/login", None, "/login"),
    ],
)
def test_path(redactor: Redactor, path: str, template: str | None, expected: str) -> None:
    assert redactor.path(path, template) == expected


def test_path_is_cleaned_and_bounded(redactor: Redactor) -> None:
    out = redactor.path("/a\x00b/" + "c" * 5000)
    assert out.startswith("/ab/ccc")
    assert out.endswith(TRUNCATED)


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"deny_keys": "password"}, "deny_keys"),
        ({"deny_keys": [""]}, "deny_keys"),
        ({"deny_keys": [1]}, "deny_keys"),
        ({"allow_keys": "email"}, "allow_keys"),
        ({"captured_headers": ["bad header"]}, "captured_headers"),
        ({"captured_headers": "user-agent"}, "captured_headers"),
        ({"replace_deny_keys": 1}, "replace_deny_keys"),
        ({"detect_values": "yes"}, "detect_values"),
        ({"max_body_bytes": -1}, "max_body_bytes"),
        ({"max_body_bytes": 1.5}, "max_body_bytes"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_items": True}, "max_items"),
        ({"max_string": 8}, "max_string"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{field} "):  # the message starts with the field's name
        RedactionConfig(**kwargs)


def test_config_is_frozen_and_normalises_collections() -> None:
    config = RedactionConfig(deny_keys=["a"], allow_keys={"b"}, captured_headers=["X-Tenant"])
    assert config.deny_keys == ("a",)
    assert config.allow_keys == ("b",)
    assert config.captured_headers == ("x-tenant",)
    with pytest.raises(AttributeError):
        config.max_depth = 3  # type: ignore[misc]
    assert Redactor(config).config is config


# -- processor chain --------------------------------------------------------------------------------


def test_chain_runs_processors_in_order() -> None:
    def add(metadata: dict[str, Any]) -> dict[str, Any]:
        metadata["steps"] = [*metadata.get("steps", []), "add"]
        return metadata

    def wrap(metadata: dict[str, Any]) -> dict[str, Any]:
        return {"wrapped": metadata}

    assert build_chain([add, add, wrap])({"ip": "10.0.0.1"}) == {"wrapped": {"ip": "10.0.0.1", "steps": ["add", "add"]}}


def test_chain_returns_none_when_a_processor_skips() -> None:
    seen: list[str] = []

    def skip(metadata: dict[str, Any]) -> dict[str, Any]:
        raise SkipAudit

    def after(metadata: dict[str, Any]) -> dict[str, Any]:
        seen.append("after")
        return metadata

    assert build_chain([skip, after])({}) is None
    assert seen == []


def test_chain_returns_none_when_a_processor_returns_none() -> None:
    assert build_chain([lambda metadata: None])({"a": 1}) is None  # type: ignore[list-item,return-value]


def test_chain_lets_other_exceptions_propagate() -> None:
    def broken(metadata: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        build_chain([broken])({})


def test_empty_chain_is_identity() -> None:
    metadata = {"a": 1}
    assert build_chain([])(metadata) is metadata


def test_chain_rejects_non_callables() -> None:
    with pytest.raises(ConfigurationError, match=r"processors\[1\]"):
        build_chain([lambda m: m, "nope"])  # type: ignore[list-item]


# -- hostile input ----------------------------------------------------------------------------------

_PIECES = [
    "\x00", "\x1b[2J", "\ud800", "\udfff", "\U0001f600", "\u202e", "é", " ", "\t", "\n", "/", "%", "%00", "&", "=",
    "://", "@", ":", "eyJ", ".", "-----BEGIN PRIVATE KEY-----", "-----END", "Bearer ", "Basic ", "4111", "1111 ",
    "-", "{", "}", "[", "]", '"', "a" * 40, "7" * 30, "password", "token",
]  # fmt: skip
_SECRET = "Zq9SecretValue77"


def _hostile_string(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))


def _hostile_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 6 if depth < 12 else 3)
    if kind == 0:
        return _hostile_string(rng)
    if kind == 1:
        return rng.choice([None, True, 0, -1, 2**70, 1.5, float("nan"), 4111111111111111])
    if kind == 2:
        return {"password": _SECRET, "note": f"Bearer {_SECRET}"}
    if kind == 3:
        return f"https://user:{_SECRET}@example.com/?token={_SECRET}"
    if kind == 4:
        return [_hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_hostile_string(rng): _hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _assert_storable(out: Any) -> None:
    text = json.dumps(out, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates
    assert "\x00" not in text
    assert _SECRET not in text


def test_hostile_values_never_raise_and_never_leak(redactor: Redactor) -> None:
    rng = random.Random(20261125)
    for _ in range(400):
        value = _hostile_value(rng)
        _assert_storable(redactor.mapping(value))
        _assert_storable(redactor.mapping({"body": value}, allow_fields=["body"]))
        string = _hostile_string(rng)
        _assert_storable(redactor.text(string))
        _assert_storable(redactor.url(string))
        _assert_storable(redactor.path(string, rng.choice([None, "/reset/{token}", "/f/{secret:path}/x"])))
        _assert_storable(redactor.query(string))
        raw = string.encode("utf-8", "surrogatepass")
        _assert_storable(redactor.headers([(b"user-agent", raw), (b"referer", raw), (raw, raw)]))


def test_hostile_bodies_never_raise_and_never_leak(redactor: Redactor) -> None:
    rng = random.Random(7)
    types = [
        None, "application/json", "multipart/form-data; boundary=b", "multipart/form-data; boundary=",
        "application/x-www-form-urlencoded", "text/plain", "\x00/\ud800", "application/json; charset=latin-1",
    ]  # fmt: skip
    for _ in range(300):
        body = _hostile_string(rng).encode("utf-8", "surrogatepass") + rng.randbytes(rng.randint(0, 40))
        if rng.random() < 0.3:
            body = b'--b\r\nContent-Disposition: form-data; name="password"\r\n\r\n' + _SECRET.encode() + b"\r\n" + body
        out = redactor.body(rng.choice(types), body, complete=rng.random() < 0.7)
        _assert_storable(out)
        assert set(out) in ({"content_type", "size", "omitted"}, {"content_type", "size", "truncated", "fields"})


def test_text_accepts_a_non_string_without_raising(redactor: Redactor) -> None:
    assert redactor.text(12345) == "12345"  # type: ignore[arg-type]


def test_max_depth_is_bounded() -> None:
    with pytest.raises(ConfigurationError, match="max_depth"):
        RedactionConfig(max_depth=65)


def test_one_redactor_is_safe_to_share_between_threads(redactor: Redactor) -> None:
    errors: list[str] = []

    def work(worker: int) -> None:
        for index in range(3000):  # distinct keys keep the bounded caches filling and clearing
            out = redactor.mapping({f"k{worker}_{index}": index, "password": "x"})
            headers = redactor.headers([(b"x-request-id", f"{worker}-{index}".encode())])
            if out != {f"k{worker}_{index}": index, "password": REDACTED} or headers != {
                "x-request-id": f"{worker}-{index}"
            }:
                errors.append(f"{worker}/{index}")

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
