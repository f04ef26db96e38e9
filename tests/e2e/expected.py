"""
What Klaviyo should hold after a sync, computed from the export alone.

Deliberately independent of the provider's code: its own email rules, written from the spec (trim,
lower-case, one canonical form for internationalised domains, reject what Klaviyo would refuse), so a bug in
the product's normaliser or planner cannot hide behind an expectation computed by the same code.
"""

from __future__ import annotations

import gzip
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def canonical_email(raw: object) -> str | None:
    """The address as Klaviyo should see it, or None when it must never be sent."""
    if not isinstance(raw, str):
        return None
    text = raw.strip().lower()
    if text.count("@") != 1:
        return None
    local, domain = text.split("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = domain.split(".")
    if not local or len(local) > 64 or not _LOCAL.match(local) or len(labels) < 2:
        return None
    if not all(_LABEL.match(label) for label in labels):
        return None
    tld = labels[-1]
    if not (tld.isascii() and tld.isalpha() and len(tld) >= 2):
        return None
    return f"{local}@{domain}"


def export_emails(export: Path) -> set[str]:
    """Every address of the export as written, and its canonical form, plain and URL-encoded."""
    emails: set[str] = set()
    with gzip.open(export, "rt", errors="replace") as lines:
        for line in lines:
            try:
                raw = json.loads(line).get("email")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(raw, str) and "@" in raw:
                emails.add(raw.strip())
                emails.add(canonical_email(raw) or "")
    emails.discard("")
    encoded = {urllib.parse.quote(e) for e in emails} | {urllib.parse.quote_plus(e) for e in emails}
    return emails | encoded


@dataclass
class ExpectedKlaviyo:
    """Per canonical email, the sorted names of the chosen segments the contact is in."""

    values: dict[str, list[str]]

    @property
    def address_book(self) -> set[str]:
        return set(self.values)


def expected_from_export(
    export: Path, chosen_names: set[str], segments_key: str = "nosto_segments"
) -> ExpectedKlaviyo:
    memberships: dict[str, set[str]] = {}
    with gzip.open(export, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(item, dict):
                continue
            email = canonical_email(item.get("email"))
            names = item.get(segments_key, [])
            if email is None or not isinstance(names, list):
                continue
            memberships.setdefault(email, set()).update(
                name for name in names if isinstance(name, str) and name in chosen_names
            )
    return ExpectedKlaviyo({email: sorted(names) for email, names in memberships.items()})
