from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.sync.emails import (
    InvalidEmail,
    email_domain,
    normalise_email,
    normalise_plain_emails,
)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("Ana@Example.com", id="capitals"),
        pytest.param(" ana@example.com", id="leading-space"),
        pytest.param("ana@example.com\t", id="trailing-tab"),
        pytest.param("\u00a0ana@example.com\n", id="nbsp-and-newline"),
        pytest.param("ANA@EXAMPLE.COM", id="all-capitals"),
    ],
)
def test_b09_spellings_of_one_address_normalise_to_one(raw: str) -> None:
    assert normalise_email(raw) == "ana@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("o'neil@example.com", id="apostrophe"),
        pytest.param("carol+news@example.com", id="plus-tag"),
        pytest.param("first.last@example.co.uk", id="dotted-local"),
        pytest.param("ana@mail.example.com", id="subdomain"),
    ],
)
def test_b03_real_addresses_are_valid(raw: str) -> None:
    assert normalise_email(raw) == raw


def test_b03_address_without_tld_is_invalid_with_a_reason() -> None:
    with pytest.raises(InvalidEmail) as caught:
        normalise_email("bob@example")

    assert caught.value.reason
    assert "bob" not in caught.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="none"),
        pytest.param(42, id="number"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("ana.example.com", id="no-at"),
        pytest.param("ana@@example.com", id="two-ats"),
        pytest.param("ana@bob@example.com", id="two-ats-apart"),
        pytest.param("@example.com", id="empty-local"),
        pytest.param(".ana@example.com", id="leading-dot"),
        pytest.param("ana.@example.com", id="trailing-dot"),
        pytest.param("an..a@example.com", id="double-dot"),
        pytest.param("an a@example.com", id="space-inside"),
        pytest.param('"ana"@example.com', id="quoted-local"),
        pytest.param("a" * 65 + "@example.com", id="local-too-long"),
        pytest.param("ana@", id="empty-domain"),
        pytest.param("ana@example.c", id="one-letter-tld"),
        pytest.param("ana@example.123", id="numeric-tld"),
        pytest.param("ana@-example.com", id="hyphen-first"),
        pytest.param("ana@exa_mple.com", id="underscore"),
        pytest.param("ana@example..com", id="empty-label"),
        pytest.param("ana@" + "a" * 64 + ".com", id="label-too-long"),
        pytest.param("ana@" + ".".join(["abcdefghi"] * 25) + ".com", id="address-too-long"),
    ],
)
def test_unusable_addresses_are_invalid(raw: object) -> None:
    with pytest.raises(InvalidEmail):
        normalise_email(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("ana@bücher.example", id="unicode"),
        pytest.param("ana@BÜCHER.example", id="unicode-capitals"),
        pytest.param("ana@xn--bcher-kva.example", id="punycode"),
        pytest.param("ana@XN--BCHER-KVA.EXAMPLE", id="punycode-capitals"),
        pytest.param("ana@bücher\u3002example", id="ideographic-full-stop"),
    ],
)
def test_internationalised_domain_has_one_ascii_form(raw: str) -> None:
    assert normalise_email(raw) == "ana@xn--bcher-kva.example"


def test_internationalised_tld_is_not_sent_because_klaviyo_refuses_it() -> None:
    with pytest.raises(InvalidEmail, match="top-level domain") as refused:
        normalise_email("ana@example.рф")

    assert "ana" not in refused.value.reason


def test_invalid_punycode_is_invalid() -> None:
    with pytest.raises(InvalidEmail):
        normalise_email("ana@xn--zz.example")


def test_email_domain() -> None:
    assert email_domain("ana@example.com") == "example.com"


def test_many_addresses_at_once_leave_only_the_unplain_to_one_at_a_time() -> None:
    raws = [
        "ana@example.com",
        " Ana.Lee@Example.COM\t",
        "ana@bücher.example",
        "ana@xn--bcher-kva.example",
        "bob@example",
        "a" * 65 + "@example.com",
        "a" * 64 + "@example.com",
        "ana@" + ".".join(["abcdefghi"] * 25) + ".com",
        "an..a@example.com",
        "o'neil+news@mail.example.co.uk",
        "ana@-example.com",
        "",
    ]

    lowered, others = normalise_plain_emails(raws)

    assert others == [2, 4, 5, 7, 8, 10, 11]
    assert [lowered[index] for index in (0, 1, 3, 6, 9)] == [
        "ana@example.com",
        "ana.lee@example.com",
        "ana@xn--bcher-kva.example",  # punycode already in canonical form
        "a" * 64 + "@example.com",
        "o'neil+news@mail.example.co.uk",
    ]
    for index in (0, 1, 3, 6, 9):
        assert normalise_email(raws[index]) == lowered[index]
