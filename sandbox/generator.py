"""Realistic, deterministic test data: a Nosto segment catalogue, a Segment Export and a Klaviyo seed.

The data carries the traps a real shop's data has: invalid addresses of many kinds, the same person
twice with different case or stray white space, internationalised domains (in Unicode and in
punycode), apostrophes and plus signs, and Klaviyo profiles whose email differs only in letter case
from the export's. Everything is drawn from one seeded generator, so a seed always gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faker import Faker

#: Nosto's automated segments with the fixed ids its documentation shows.
BUILT_IN_SEGMENTS = [
    ("5a497a000000000000000005", "Loyal Customers"),
    ("5a497a000000000000000004", "Repeat Customers"),
    ("5a497a000000000000000003", "First-Time Customers"),
    ("5a497a000000000000000002", "Prospects"),
    ("5b71f1500000000000000006", "Returning Visitors"),
    ("5a497a000000000000000001", "First-Time Visitors"),
    ("5a497a000000000000000000", "All Customers"),
]
CUSTOM_SEGMENT_NAMES = [
    "Category affinity: Kombai",
    "Brand fans: Nike",
    "Brand fans: Adidas",
    "Category affinity: Running",
    "Discount seekers",
    "High AOV – VIP",
    "Cart abandoners (30 d)",
    "Brand fans: Marimekko",
    "Category affinity: Outdoor & Hiking",
    "Newsletter readers who never bought",
    "Lapsed customers",
    "Category affinity: Kids' shoes",
]
FREE_MAIL = [
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "proton.me",
]
IDN_DOMAINS = [("bücher.de", "xn--bcher-kva.de"), ("müller-shop.fi", "xn--mller-shop-9db.fi")]
LOYALTY_TIERS = ["bronze", "silver", "gold", "platinum"]


def _segment_catalogue(rng: random.Random, count: int) -> list[dict[str, str]]:
    built_in = BUILT_IN_SEGMENTS[: min(5, max(1, count // 2))]
    catalogue = [{"id": ident, "name": name} for ident, name in built_in]
    index = 0
    while len(catalogue) < count:
        base = CUSTOM_SEGMENT_NAMES[index % len(CUSTOM_SEGMENT_NAMES)]
        name = (
            base if index < len(CUSTOM_SEGMENT_NAMES) else f"{base} #{index // len(CUSTOM_SEGMENT_NAMES) + 1}"
        )
        catalogue.append({"id": f"{rng.getrandbits(96):024x}", "name": name})
        index += 1
    return catalogue


def _ascii_name(text: str) -> str:
    cleaned = "".join(ch for ch in text.lower() if ch.isascii() and (ch.isalnum() or ch in "'-"))
    return cleaned.strip("-'") or "user"


class _EmailFactory:
    """Makes unique, plausible addresses for generated people."""

    def __init__(self, rng: random.Random, fake: Faker) -> None:
        self.rng = rng
        self.fake = fake
        self.company_domains = sorted({fake.domain_name() for _ in range(300)})
        # Drawing from pools is what makes 50,000 people take seconds rather than a minute.
        self.first_names = [fake.first_name() for _ in range(4000)]
        self.last_names = [fake.last_name() for _ in range(4000)]
        self.used: set[str] = set()

    def person(self) -> tuple[str, str, str]:
        first = self.rng.choice(self.first_names)
        last = self.rng.choice(self.last_names)
        if self.rng.random() < 0.01:
            last = "O'" + last  # Apostrophes are valid in local parts and in real names.
        return first, last, self.email(first, last)

    def email(self, first: str, last: str) -> str:
        rng = self.rng
        f, surname = _ascii_name(first), _ascii_name(last)
        style = rng.random()
        if style < 0.35:
            local = f"{f}.{surname}"
        elif style < 0.55:
            local = f"{f[0]}{surname}"
        elif style < 0.75:
            local = f"{f}{surname}{rng.randint(1, 99)}"
        elif style < 0.85:
            local = f"{f}_{surname}"
        elif style < 0.92:
            local = f"{f}.{surname}+{rng.choice(['shop', 'news', 'nosto', 'promo'])}"
        else:
            local = f"{surname}.{f}{rng.randint(1970, 2005)}"
        domain = rng.choice(FREE_MAIL) if rng.random() < 0.7 else rng.choice(self.company_domains)
        address = f"{local}@{domain}"
        while address.lower() in self.used:
            address = f"{local}{rng.randint(100, 9999)}@{domain}"
        self.used.add(address.lower())
        if rng.random() < 0.03:
            # People type their address with capitals; Nosto keeps what was typed.
            address = address[0].upper() + address[1:]
        return address


def _invalid_email(rng: random.Random, valid: str) -> str:
    local, _, domain = valid.partition("@")
    kinds = [
        lambda: f"{local}@{domain.rsplit('.', 1)[0]}",  # no TLD
        lambda: f"{local}@@{domain}",
        lambda: f"{local.replace('.', ' ', 1) or local + ' x'}@{domain}",  # inner space
        lambda: f"{local}.{domain}",  # no @
        lambda: f"{local}@{domain.rsplit('.', 1)[0]}.c",  # one-letter TLD
        lambda: f"{local}@{domain.replace('.', '..', 1)}",
        lambda: f".{local}@{domain}",
        lambda: f"{local}.@{domain}",
        lambda: "",
        lambda: f"{local}@{domain},",
        lambda: f"{local}@-{domain}",
        lambda: f"{local}@{domain}.123",
    ]
    return rng.choice(kinds)()


def _memberships(rng: random.Random, catalogue: list[dict[str, str]]) -> list[str]:
    names = {item["name"] for item in catalogue}
    chosen: list[str] = []
    stage = rng.random()
    if stage < 0.3:
        chosen.append("Prospects")
    elif stage < 0.6:
        chosen.append("First-Time Customers")
    else:
        chosen.append("Repeat Customers")
        if stage > 0.85:
            chosen.append("Loyal Customers")
    if rng.random() < 0.4:
        chosen.append("Returning Visitors")
    if stage >= 0.3 and rng.random() < 0.5:
        chosen.append("All Customers")
    for item in catalogue:
        if item["id"].startswith(("5a497a", "5b71f15")):
            continue
        if rng.random() < 0.12:
            chosen.append(item["name"])
    return sorted(name for name in set(chosen) if name in names)


def _write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    # mtime 0 makes the same seed give byte-identical files.
    path.write_bytes(gzip.compress(data, mtime=0))
    return len(lines)


def generate(
    *, contacts: int, segments: int, seed: int, out: Path, segments_key: str = "nosto_segments"
) -> dict[str, Any]:
    """Write ``catalogue.json``, ``export.jsonl.gz`` and ``klaviyo-seed.json`` into ``out``."""
    rng = random.Random(seed)
    fake = Faker(["en_US", "en_GB", "de_DE", "fi_FI"])
    fake.seed_instance(seed)
    out.mkdir(parents=True, exist_ok=True)

    catalogue = _segment_catalogue(rng, segments)
    factory = _EmailFactory(rng, fake)
    people: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    invalid = duplicates = 0
    for _ in range(contacts):
        first, last, email = factory.person()
        member_of = _memberships(rng, catalogue)
        if rng.random() < 0.005:
            email = _invalid_email(rng, email)
            invalid += 1
        else:
            people.append({"email": email, "first_name": first, "last_name": last})
        rows.append({"email": email, segments_key: member_of})

    # Internationalised domains, once in Unicode and once, for the same person, in punycode.
    for unicode_domain, puny_domain in IDN_DOMAINS:
        local = _ascii_name(rng.choice(factory.first_names))
        rows.append({"email": f"{local}@{unicode_domain}", segments_key: _memberships(rng, catalogue)})
        rows.append({"email": f"{local}@{puny_domain}", segments_key: _memberships(rng, catalogue)})

    # The same person exported twice, differing only in case or surrounding white space.
    for row in rng.sample(rows[:contacts], k=max(1, contacts // 300)):
        if not row["email"]:
            continue
        variant = rng.choice(
            [row["email"].upper(), f" {row['email']} ", f"{row['email']}\t", row["email"].title()]
        )
        rows.append(
            {"email": variant, segments_key: rng.choice([row[segments_key], _memberships(rng, catalogue)])}
        )
        duplicates += 1
    rng.shuffle(rows)

    seed_profiles = _klaviyo_seed(rng, people)
    (out / "catalogue.json").write_text(
        json.dumps(catalogue, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lines = _write_jsonl_gz(out / "export.jsonl.gz", rows)
    (out / "klaviyo-seed.json").write_text(json.dumps(seed_profiles, indent=1) + "\n", encoding="utf-8")
    return {
        "contacts": contacts,
        "lines": lines,
        "invalid": invalid,
        "duplicates": duplicates,
        "segments": len(catalogue),
        "klaviyo_profiles": len(seed_profiles),
        "out": str(out),
    }


def _klaviyo_seed(rng: random.Random, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """About 10% of the contacts already in Klaviyo, a few under a differently cased email."""
    chosen = rng.sample(people, k=len(people) // 10)
    seeds = []
    for person in chosen:
        email = person["email"]
        if rng.random() < 0.05:
            # Same mailbox, different letter case: Klaviyo keeps it as a separate identity.
            local, _, domain = email.partition("@")
            email = f"{local.title()}@{domain}" if local.title() != local else email.upper()
        profile: dict[str, Any] = {
            "email": email,
            "first_name": person["first_name"],
            "last_name": person["last_name"],
            "properties": {
                "loyalty_tier": rng.choice(LOYALTY_TIERS),
                "signup_source": rng.choice(["checkout", "popup", "footer", "pos"]),
                "favourite_colour": rng.choice(["red", "blue", "green", "black"]),
            },
        }
        roll = rng.random()
        if roll < 0.03:
            profile["suppressed"] = rng.choice(["USER_SUPPRESSED", "HARD_BOUNCE", "UNSUBSCRIBE"])
            profile["consent"] = "UNSUBSCRIBED"
        elif roll < 0.08:
            profile["consent"] = "UNSUBSCRIBED"
        elif roll < 0.6:
            profile["consent"] = "SUBSCRIBED"
        if rng.random() < 0.5:
            profile["lists"] = ["Newsletter"]
        seeds.append(profile)
    return seeds


def read_export(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def evolve(
    *,
    source: Path,
    out: Path,
    seed: int,
    segments_key: str = "nosto_segments",
    catalogue: Path | None = None,
) -> dict[str, Any]:
    """Write the next day's export: a few percent join, leave, move, vanish, and newcomers arrive."""
    rng = random.Random(seed)
    fake = Faker(["en_US", "en_GB", "de_DE", "fi_FI"])
    fake.seed_instance(seed)
    rows = read_export(source)
    if catalogue is not None:
        names = [item["name"] for item in json.loads(catalogue.read_text(encoding="utf-8"))]
    else:
        names = sorted({name for row in rows for name in row.get(segments_key, [])})
    counts = {"joined": 0, "left": 0, "moved": 0, "gone": 0, "new": 0}

    kept: list[dict[str, Any]] = []
    for row in rows:
        current = list(row.get(segments_key, []))
        roll = rng.random()
        if roll < 0.02:
            counts["gone"] += 1
            continue
        absent = [name for name in names if name not in current]
        if roll < 0.05 and absent:
            current.append(rng.choice(absent))
            counts["joined"] += 1
        elif roll < 0.08 and current:
            current.remove(rng.choice(current))
            counts["left"] += 1
        elif roll < 0.10 and current and absent:
            current.remove(rng.choice(current))
            current.append(rng.choice(absent))
            counts["moved"] += 1
        kept.append({**row, segments_key: sorted(current)})

    factory = _EmailFactory(rng, fake)
    factory.used = {str(row["email"]).strip().lower() for row in rows}
    for _ in range(max(1, len(rows) * 3 // 100)):
        _first, _last, email = factory.person()
        member_of = sorted(rng.sample(names, k=rng.randint(1, min(3, len(names))))) if names else []
        kept.append({"email": email, segments_key: member_of})
        counts["new"] += 1

    out.parent.mkdir(parents=True, exist_ok=True)
    lines = _write_jsonl_gz(out, kept)
    return {"lines": lines, **counts, "out": str(out)}
