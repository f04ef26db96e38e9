"""A contact whose export line has a usable email but unreadable segment names is still in Nosto: kept, not removed."""

from __future__ import annotations

import contextlib
import io

import pytest

from tests.unit.operators.world import SyncWorld, spec_for

ANA = "ana@example.com"
BOB = "bob@example.com"


@pytest.mark.parametrize(
    "ana_line",
    [
        b'{"email": "Ana@Example.com", "nosto_segments": null}\n',
        b'{"email": "ana@example.com", "nosto_segments": "vip"}\n',
        b'{"email": "ana@example.com", "nosto_segments": ["vip", 7]}\n',
    ],
)
def test_contact_with_unreadable_segments_is_neither_removed_nor_cleared(
    world: SyncWorld, ana_line: bytes
) -> None:
    world.apply({ANA: ["vip"], BOB: ["vip"]})
    data = ana_line + b'{"email": "bob@example.com", "nosto_segments": ["vip", "new"]}\n'
    world.nosto.open_export.side_effect = lambda uri=None: contextlib.nullcontext(io.BytesIO(data))

    specs = world.sync()

    assert spec_for(specs, "address-book")["left"] == 0
    assert spec_for(specs, "101")["left"] == 0
    assert world.diffs(specs) == {"102": {BOB: ["new", "vip"]}}
