"""The operators' world in miniature: mocked hooks, the sync's Variable and a state folder."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from airflow_provider_klaviyo_nosto.hooks.klaviyo import (
    BulkImportJob,
    BulkImportJobStatus,
    BulkImportSubmission,
    KlaviyoHook,
)
from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook
from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator
from airflow_provider_klaviyo_nosto.sync.model import Segment

VIP = Segment("101", "vip")
NEW = Segment("102", "new")
LIST_ID = "LIST1"
CATALOGUE = [VIP, NEW]

#: Klaviyo methods that change something; a run that should write nothing calls none of them.
KLAVIYO_WRITES = (
    "create_list",
    "add_profiles_to_list",
    "remove_profiles_from_list",
    "submit_bulk_import",
    "unset_profile_property",
)


def completed_job(job_id: str) -> BulkImportJob:
    return BulkImportJob(job_id, BulkImportJobStatus.COMPLETE, 1, 1, 0)


def new_klaviyo_hook() -> mock.Mock:
    """A Klaviyo account with the address-book list, no flows, and bulk jobs that complete at once."""
    hook = mock.create_autospec(KlaviyoHook, instance=True)
    # Set in KlaviyoHook.__init__, so autospec cannot see it; the push reads it for its summary.
    hook.calls_made = 0
    hook.throttled = 0
    hook.find_list_by_name.return_value = LIST_ID
    hook.get_list.return_value = {"id": LIST_ID}
    hook.get_list_flow_triggers.return_value = []
    hook.get_profile_ids_by_email.return_value = {}
    job_numbers = count(1)
    hook.submit_bulk_import.side_effect = lambda profiles, list_id: BulkImportSubmission(
        job_id=f"JOB{next(job_numbers)}"
    )
    hook.get_bulk_import_job.side_effect = completed_job
    hook.iter_bulk_import_errors.side_effect = lambda job_id: iter([])
    return hook


class SyncWorld:
    """Runs the sync and push operators the way the DAG does, against mocked hooks."""

    def __init__(self, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.state_dir = state_dir
        self.state_uri = f"file://{state_dir}"
        self.monkeypatch = monkeypatch
        self.nosto = mock.create_autospec(NostoHook, instance=True)
        self.nosto.get_segments.return_value = CATALOGUE
        self.klaviyo = new_klaviyo_hook()
        self.configure()

    def configure(self, **overrides: Any) -> None:
        config = {"segments": [VIP.id, NEW.id], "state_uri": self.state_uri, **overrides}
        self.monkeypatch.setenv("AIRFLOW_VAR_NOSTO_KLAVIYO_SEGMENT_SYNC", json.dumps(config))

    def export(self, members: Mapping[str, Sequence[str]]) -> None:
        """Make the export: email -> names of the segments the contact is in."""
        data = b"".join(
            json.dumps({"email": email, "nosto_segments": list(names)}).encode() + b"\n"
            for email, names in members.items()
        )
        self.nosto.open_export.side_effect = lambda uri=None: contextlib.nullcontext(io.BytesIO(data))

    def sync(self, **params: Any) -> list[dict[str, Any]]:
        """Run the sync task and return its XCom as the push tasks receive it."""
        specs = NostoSegmentSyncOperator(task_id="sync", **params).execute(context={})  # type: ignore[arg-type]
        return json.loads(json.dumps(specs))  # type: ignore[no-any-return]

    def push_operator(self, spec: Mapping[str, Any], **params: Any) -> KlaviyoSegmentPushOperator:
        return KlaviyoSegmentPushOperator(
            task_id="push", push=dict(spec), **{"deferrable": False, "poll_interval": 0, **params}
        )

    def push(self, spec: Mapping[str, Any], **params: Any) -> dict[str, Any]:
        return self.push_operator(spec, **params).execute(context={})  # type: ignore[arg-type]

    def apply(self, members: Mapping[str, Sequence[str]]) -> None:
        """Sync and push an export completely, then forget the calls it made."""
        self.export(members)
        for spec in self.sync(allow_removals=True):
            self.push(spec)
        self.klaviyo.reset_mock()

    def diffs(self, specs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
        """Push key -> {email: the whole new value} of the diff files the specs point to."""
        found = {}
        for spec in specs:
            path = self.state_dir / "diffs" / f"{spec['generation']:08d}" / f"{spec['key']}.jsonl.gz"
            if path.exists():
                found[spec["key"]] = {line[0]: line[3] for line in _json_lines(path)}
        return found

    def journal(self, generation: int, key: str) -> dict[str, tuple[bool, list[str]]]:
        """Email -> (in the address book, value) as one push task's journal recorded it."""
        path = self.state_dir / "journal" / f"{generation:08d}-{key}.jsonl.gz"
        return {line[0]: (bool(line[1]), line[3]) for line in _json_lines(path)}

    def files(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.state_dir)): path.read_bytes()
            for path in sorted(self.state_dir.rglob("*"))
            if path.is_file()
        }

    def submitted_emails(self) -> list[list[str]]:
        """The emails of every bulk import submitted, one list per job."""
        return [
            [profile["attributes"]["email"] for profile in call.args[0]]
            for call in self.klaviyo.submit_bulk_import.call_args_list
        ]


def spec_for(specs: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    return next(dict(spec) for spec in specs if spec["key"] == key)


def _json_lines(path: Path) -> Iterator[list[Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)
