"""The data generator: deterministic, realistic, and carrying the traps it promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.generator import evolve, generate, read_export
from sandbox.klaviyo_state import is_valid_email

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    generate(contacts=3000, segments=12, seed=7, out=out)
    return out


def test_same_seed_gives_same_bytes(generated: Path, tmp_path: Path) -> None:
    generate(contacts=3000, segments=12, seed=7, out=tmp_path)
    for name in ("catalogue.json", "export.jsonl.gz", "klaviyo-seed.json"):
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes(), name
    generate(contacts=3000, segments=12, seed=8, out=tmp_path / "other")
    assert (tmp_path / "other" / "export.jsonl.gz").read_bytes() != (
        generated / "export.jsonl.gz"
    ).read_bytes()


def test_catalogue_shape(generated: Path) -> None:
    catalogue = json.loads((generated / "catalogue.json").read_text(encoding="utf-8"))
    assert len(catalogue) == 12
    assert all(re.fullmatch(r"[0-9a-f]{24}", item["id"]) for item in catalogue)
    names = {item["name"] for item in catalogue}
    assert {"Loyal Customers", "Category affinity: Kombai", "Brand fans: Nike"} <= names
    assert "5a497a000000000000000005" in {item["id"] for item in catalogue}


def test_export_carries_realistic_traps(generated: Path) -> None:
    rows = read_export(generated / "export.jsonl.gz")
    assert len(rows) > 3000
    emails = [row["email"] for row in rows]
    invalid = [email for email in emails if not is_valid_email(email.strip())]
    assert 0.002 < len(invalid) / len(rows) < 0.02
    assert any("'" in email for email in emails)
    assert any("+" in email for email in emails)
    assert any(email != email.strip() for email in emails)
    assert any("bücher.de" in email for email in emails)
    normalised = [email.strip().lower() for email in emails]
    assert len(set(normalised)) < len(normalised)
    memberships = [len(row["nosto_segments"]) for row in rows]
    assert sum(1 for count in memberships if count >= 3) > len(rows) // 5


def test_klaviyo_seed_has_case_variants(generated: Path) -> None:
    seed = json.loads((generated / "klaviyo-seed.json").read_text(encoding="utf-8"))
    assert 250 <= len(seed) <= 320
    export_emails = {row["email"] for row in read_export(generated / "export.jsonl.gz")}
    exact = [profile for profile in seed if profile["email"] in export_emails]
    case_only = [
        profile
        for profile in seed
        if profile["email"] not in export_emails
        and profile["email"].lower() in {email.lower() for email in export_emails}
    ]
    assert exact
    assert case_only
    assert any(profile.get("suppressed") for profile in seed)
    assert all("loyalty_tier" in profile["properties"] for profile in seed)


def test_evolve_changes_a_few_percent(generated: Path, tmp_path: Path) -> None:
    summary = evolve(source=generated / "export.jsonl.gz", out=tmp_path / "next.jsonl.gz", seed=2)
    assert all(summary[key] > 0 for key in ("joined", "left", "moved", "gone", "new"))
    before = {row["email"]: row["nosto_segments"] for row in read_export(generated / "export.jsonl.gz")}
    after = {row["email"]: row["nosto_segments"] for row in read_export(tmp_path / "next.jsonl.gz")}
    changed = sum(1 for email, names in after.items() if email in before and before[email] != names)
    assert 0.02 * len(before) < changed < 0.2 * len(before)
    again = evolve(source=generated / "export.jsonl.gz", out=tmp_path / "again.jsonl.gz", seed=2)
    assert again["lines"] == summary["lines"]
    assert (tmp_path / "again.jsonl.gz").read_bytes() == (tmp_path / "next.jsonl.gz").read_bytes()


def test_cli_and_segments_key(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sandbox", "generate", "--contacts", "200", "--segments", "6"]
    command += ["--seed", "3", "--out", str(tmp_path), "--segments-key", "segs"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert "contacts=200" in result.stdout
    assert all("segs" in row for row in read_export(tmp_path / "export.jsonl.gz"))


def test_trimmed_schema_is_what_the_script_writes(tmp_path: Path) -> None:
    # The official schema sits beside the repository in CI (../shared); the committed trimmed copy must be
    # exactly what the kept script makes of it.
    official = REPO.parent / "shared" / "reference" / "klaviyo-openapi-2026-07-15.json"
    assert official.exists(), f"Klaviyo's official schema is expected at {official}"
    out = tmp_path / "trimmed.json"
    subprocess.run(
        [sys.executable, "scripts/trim_openapi.py", str(official), "--out", str(out)], cwd=REPO, check=True
    )
    assert out.read_bytes() == (REPO / "sandbox" / "klaviyo_openapi_trimmed.json").read_bytes()
    assert '"description"' not in out.read_text(encoding="utf-8")
