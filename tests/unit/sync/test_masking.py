from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from airflow_provider_klaviyo_nosto.sync.masking import mask_email, redact


def test_mask_email_keeps_first_characters_and_tld() -> None:
    assert mask_email("ana@example.com") == "a**@e******.com"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("bob@example", id="no-tld"),
        pytest.param("not an address", id="no-at"),
        pytest.param("a@b.com", id="one-letter-parts"),
    ],
)
def test_mask_email_never_shows_the_input(text: str) -> None:
    assert mask_email(text) != text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("profile ana@example.com failed", "profile a**@e******.com failed", id="plain"),
        pytest.param(
            "email=ana%40example.com&page=2", "e********%40e******.com&page=2", id="percent-encoded-at"
        ),
        pytest.param("key pk_abc123XYZ789 rejected", "key pk_*** rejected", id="private-key"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_klaviyo_error_json() -> None:
    error = json.dumps(
        {
            "errors": [
                {
                    "status": 400,
                    "code": "invalid",
                    "detail": "Invalid email address o'neil@example.com",
                    "source": {"pointer": "/data/attributes/profiles/data/1/attributes/email"},
                    "meta": {"email": "carol+news@example.com"},
                }
            ]
        }
    )

    redacted = redact(error)

    assert "o'neil" not in redacted
    assert "carol" not in redacted
    assert "@example.com" not in redacted
    assert json.loads(redacted)["errors"][0]["meta"]["email"] == "c*********@e******.com"
    assert "/data/attributes/profiles/data/1/attributes/email" in redacted


def test_redact_filter_url() -> None:
    url = 'https://a.klaviyo.com/api/profiles?filter=any(email,["ana@example.com","carol+news@example.com"])'

    assert redact(url) == (
        'https://a.klaviyo.com/api/profiles?filter=any(email,["a**@e******.com","c*********@e******.com"])'
    )


def test_redact_percent_encoded_filter_url() -> None:
    url = "https://a.klaviyo.com/api/profiles?filter=" + quote(
        'any(email,["ana@example.com","carol+news@example.com"])'
    )

    redacted = redact(url)

    assert "ana" not in redacted
    assert "carol" not in redacted
    assert "news" not in redacted
    assert "example%2Ecom" not in redacted
    assert redacted.startswith(
        "https://a.klaviyo.com/api/profiles?filter=any%28email%2C%5B%22a**%40e******.com%22"
    )


def test_redact_key_and_email_together() -> None:
    text = "Authorization: Klaviyo-API-Key pk_0123456789abcdef for ana@example.com"

    assert redact(text) == "Authorization: Klaviyo-API-Key pk_*** for a**@e******.com"


def test_redact_leaves_text_without_secrets_alone() -> None:
    text = "GET /api/lists/XyZ123/relationships/profiles returned 429 after 3 tries"

    assert redact(text) == text
