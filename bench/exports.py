"""Reproducible benchmark data: a Segment Export with 20 segments and the applied state it is diffed against.

The export is generated straight to gzip, line by line, so 5,000,000 contacts need neither Faker nor the whole
export in memory. One seed always gives the same bytes. The applied state is what an earlier run confirmed: the
export's own membership with about 5% of it changed (contacts who joined or left one segment since, newcomers not
yet applied, and applied contacts gone from the export), written by the sync's own ``write_contacts``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from airflow_provider_klaviyo_nosto.sync.model import ContactRecord
from airflow_provider_klaviyo_nosto.sync.state import write_contacts
from sandbox.generator import CUSTOM_SEGMENT_NAMES

SEGMENTS = 20
#: Bumped when the applied-state snapshot's file format changes, so that older data sets are generated again.
SNAPSHOT_FORMAT = 2
#: The share of contacts whose applied record differs from the export's.
CHANGED_SHARE = 0.05

_LIFECYCLE = ["Prospects", "First-Time Customers", "Repeat Customers", "Loyal Customers"]
_CUSTOM = [
    "Returning Visitors",
    "All Customers",
    *CUSTOM_SEGMENT_NAMES,
    "Sale hunters: Winter",
    "Gift buyers",
]
_FIRST = [
    "anna",
    "mikko",
    "laura",
    "jussi",
    "emma",
    "oliver",
    "sofia",
    "lucas",
    "aino",
    "leo",
    "maria",
    "noah",
]
_LAST = ["virtanen", "korhonen", "smith", "muller", "garcia", "nieminen", "brown", "o'neil", "schmidt", "lee"]
_DOMAINS = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "gmx.de", "proton.me"]


@dataclass(frozen=True)
class BenchData:
    """Where one generated data set lives and what it holds."""

    folder: str
    contacts: int
    seed: int
    export: str
    applied_contacts: str
    catalogue: str
    export_lines: int
    applied_records: int
    changed: int


def catalogue(seed: int) -> list[dict[str, str]]:
    """Return the 20 segments, ids drawn from ``seed``."""
    rng = random.Random(f"catalogue-{seed}")
    names = (_LIFECYCLE + _CUSTOM)[:SEGMENTS]
    return [{"id": f"{rng.getrandbits(96):024x}", "name": name} for name in names]


def generate(folder: Path, contacts: int, seed: int = 1) -> BenchData:
    """Write ``export.jsonl.gz``, ``contacts.jsonl.gz`` (applied state) and ``catalogue.json`` into ``folder``.

    An existing, complete data set with the same size and seed is reused.
    """
    manifest = folder / "manifest.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        # Data sets written before the snapshot's current format are generated again.
        if saved.pop("snapshot_format", None) == SNAPSHOT_FORMAT:
            data = BenchData(**saved)
            if data.contacts == contacts and data.seed == seed:
                return data
    folder.mkdir(parents=True, exist_ok=True)
    segments = catalogue(seed)
    (folder / "catalogue.json").write_text(json.dumps(segments, ensure_ascii=False, indent=1) + "\n")
    ids = {segment["name"]: segment["id"] for segment in segments}
    custom = [segment["name"] for segment in segments if segment["name"] not in _LIFECYCLE]

    rng = random.Random(seed)
    export_lines = changed = 0
    state: dict[str, ContactRecord] = {}
    records = _Records(ids)
    export_path, applied_path = folder / "export.jsonl.gz", folder / "contacts.jsonl.gz"
    with (
        gzip.open(export_path, "wt", encoding="utf-8", compresslevel=6) as export,
    ):
        export_chunk: list[str] = []
        for index in range(contacts):
            email = (
                f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{index:x}@{_DOMAINS[rng.randrange(len(_DOMAINS))]}"
            )
            names = {_LIFECYCLE[min(3, int(rng.random() * 4))]}
            names.update(name for name in custom if rng.random() < 0.1)
            shown = email.capitalize() if rng.random() < 0.03 else email
            export_chunk.append(
                json.dumps({"email": shown, "nosto_segments": sorted(names)}, ensure_ascii=False)
            )
            export_lines += 1

            roll = rng.random()
            before = set(names)
            if roll < 0.02:
                before.add(custom[rng.randrange(len(custom))])  # left a segment since
            elif roll < 0.04 and len(before) > 1:
                before.discard(sorted(before)[rng.randrange(len(before))])  # joined one since
            elif roll < 0.045:
                before = set()  # new since the last run
            if roll < 0.045:
                changed += 1
            if before:
                state[email] = records.record(before)
            if roll >= 0.995:  # gone from Nosto since the last run
                state[f"gone{index:x}@example.org"] = records.record(names)
                changed += 1
            if len(export_chunk) >= 10_000:
                export.write("\n".join(export_chunk) + "\n")
                export_chunk.clear()
        if export_chunk:
            export.write("\n".join(export_chunk) + "\n")
    # The applied state is written as the sync writes it.
    applied = len(state)
    with applied_path.open("wb") as stream:
        write_contacts(stream, state)

    data = BenchData(
        folder=str(folder),
        contacts=contacts,
        seed=seed,
        export=str(export_path),
        applied_contacts=str(applied_path),
        catalogue=str(folder / "catalogue.json"),
        export_lines=export_lines,
        applied_records=applied,
        changed=changed,
    )
    manifest.write_text(json.dumps({**asdict(data), "snapshot_format": SNAPSHOT_FORMAT}, indent=1) + "\n")
    return data


class _Records:
    """One shared applied record per set of segment names, as the sync's own reader gives."""

    def __init__(self, ids: dict[str, str]) -> None:
        self._ids = ids
        self._records: dict[frozenset[str], ContactRecord] = {}

    def record(self, names: set[str]) -> ContactRecord:
        key = frozenset(names)
        record = self._records.get(key)
        if record is None:
            ordered = tuple(sorted(names))
            segment_ids = tuple(sorted(self._ids[name] for name in ordered))
            record = self._records[key] = ContactRecord(True, segment_ids, ordered)
        return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__)
    parser.add_argument("--contacts", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asdict(generate(args.out, args.contacts, args.seed))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
