from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.state_store import StateStore, refuse_local_state_on_distributed_executor
from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactChange, ContactRecord
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState, StateFileError

ANA = "ana@example.com"
BOB = "bob@example.com"
IN_VIP = ContactRecord(True, ("101",), ("vip",))
IN_VIP_AND_NEW = ContactRecord(True, ("101", "102"), ("new", "vip"))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"file://{tmp_path}/state")


def _state(contacts: dict[str, ContactRecord], generation: int = 1) -> AppliedState:
    return AppliedState(
        list_id="LIST1",
        list_name="Nosto Customers",
        property_name="nosto_segment",
        generation=generation,
        segments={"101": SegmentState("vip", generation)},
        contacts=contacts,
    )


def _files(tmp_path: Path) -> list[str]:
    return sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())


def test_missing_folder_is_the_state_of_a_sync_that_never_ran(store: StateStore) -> None:
    state, journals = store.load()

    assert state == AppliedState.empty()
    assert journals == []


def test_saved_state_loads_back(store: StateStore) -> None:
    store.save(_state({ANA: IN_VIP, BOB: IN_VIP_AND_NEW}, generation=4))

    state, _ = store.load()

    assert state == _state({ANA: IN_VIP, BOB: IN_VIP_AND_NEW}, generation=4)
    assert store.load_meta().generation == 4


def test_journals_fold_in_generation_order_and_go_once_saved(store: StateStore, tmp_path: Path) -> None:
    store.save(_state({ANA: IN_VIP, BOB: IN_VIP}, generation=2))
    store.write_journal(3, "101", [(ANA, IN_VIP_AND_NEW)])
    store.write_journal(2, "102", [(ANA, EMPTY_RECORD), (BOB, EMPTY_RECORD)])

    state, journals = store.load()
    store.save(state, journals)

    assert state.contacts == {ANA: IN_VIP_AND_NEW}
    assert _files(tmp_path) == ["state/contacts.jsonl.gz", "state/meta.json"]


def test_snapshot_of_one_line_per_contact_loads_and_is_saved_one_line_per_record(
    store: StateStore, tmp_path: Path
) -> None:
    store.save(_state({ANA: IN_VIP}, generation=2))
    snapshot = tmp_path / "state" / "contacts.jsonl.gz"
    snapshot.write_bytes(
        gzip.compress(b'["ana@example.com",1,["101"],["vip"]]\n["bob@example.com",1,["101"],["vip"]]\n')
    )

    state, journals = store.load()
    store.save(state, journals)

    assert state.contacts == {ANA: IN_VIP, BOB: IN_VIP}
    assert (
        gzip.decompress(snapshot.read_bytes())
        == b'[1,["101"],["vip"],["ana@example.com","bob@example.com"]]\n'
    )


def test_lost_snapshot_is_refused_naming_the_file_the_folder_and_the_way_out(
    store: StateStore, tmp_path: Path
) -> None:
    store.save(_state({ANA: IN_VIP}, generation=3))
    (tmp_path / "state" / "contacts.jsonl.gz").unlink()

    with pytest.raises(KlaviyoConfigError) as raised:
        store.load()

    message = str(raised.value)
    assert "no contacts.jsonl.gz" in message
    assert f"file://{tmp_path}/state" in message
    assert "from a backup" in message
    assert "point state_uri at a new, empty folder" in message


def test_first_run_whose_pushes_are_not_folded_yet_loads(store: StateStore) -> None:
    store.save(_state({}, generation=1))
    store.write_journal(1, "101", [(ANA, IN_VIP)])

    state, journals = store.load()

    assert state.contacts == {ANA: IN_VIP}
    assert len(journals) == 1


@pytest.mark.parametrize(
    "content",
    [
        b'{"scanned_at": "2026-01-01T00:00:00+00:00", "aliases": {',
        b"[]",
        b'{"scanned_at": 5, "aliases": {}}',
        b'{"scanned_at": null, "aliases": {"ana@example.com": 5}}',
    ],
    ids=["cut-off", "not-an-object", "watermark-not-a-string", "alias-not-a-string"],
)
def test_edited_email_aliases_file_names_the_file_and_says_to_delete_it(
    store: StateStore, tmp_path: Path, content: bytes
) -> None:
    store.write_email_aliases("2026-01-01T00:00:00+00:00", {ANA: "Ana@Example.com"})
    (tmp_path / "state" / "email-aliases.json").write_bytes(content)

    with pytest.raises(StateFileError) as raised:
        store.read_email_aliases()

    message = str(raised.value)
    assert "corrupt applied-state file email-aliases.json" in message
    assert "Delete email-aliases.json" in message
    assert ANA not in message


@pytest.mark.parametrize(
    "content",
    [b'{"batches": {', b"[]", b'{"batches": ["JOB1"]}'],
    ids=["cut-off", "not-an-object", "batches"],
)
def test_edited_progress_file_names_the_file(store: StateStore, tmp_path: Path, content: bytes) -> None:
    store.write_progress(1, "101", {"batches": {"0": {"job_id": "JOB1"}}})
    (tmp_path / "state" / "progress" / "00000001-101.json").write_bytes(content)

    with pytest.raises(StateFileError, match=r"corrupt applied-state file progress/00000001-101\.json"):
        store.read_progress(1, "101")


def test_diff_round_trip_and_delete(store: StateStore, tmp_path: Path) -> None:
    changes = [ContactChange(ANA, IN_VIP, IN_VIP_AND_NEW), ContactChange(BOB, IN_VIP, EMPTY_RECORD)]
    store.write_diff(5, "101", changes)
    store.write_progress(5, "101", {"batches": {"0": {"job_id": "JOB1"}}})

    assert store.read_diff(5, "101") == changes
    store.delete_diff(5, "101")
    assert _files(tmp_path) == []


def test_stale_diffs_go_and_current_ones_stay(store: StateStore, tmp_path: Path) -> None:
    for generation in (3, 4):
        store.write_diff(generation, "101", [ContactChange(ANA, EMPTY_RECORD, IN_VIP)])
        store.write_progress(generation, "101", {"batches": {}})

    store.delete_stale_diffs(below_generation=4)

    assert _files(tmp_path) == ["state/diffs/00000004/101.jsonl.gz", "state/progress/00000004-101.json"]


def test_progress_is_empty_until_written_and_overwritten_in_place(store: StateStore, tmp_path: Path) -> None:
    assert store.read_progress(1, "101") == {}

    store.write_progress(1, "101", {"batches": {"0": {"job_id": "JOB1"}}})
    store.write_progress(1, "101", {"batches": {"0": {"job_id": "JOB1"}, "1": {"job_id": "JOB2"}}})

    assert store.read_progress(1, "101") == {"batches": {"0": {"job_id": "JOB1"}, "1": {"job_id": "JOB2"}}}
    assert store.read_progress(1, "102") == {}
    assert _files(tmp_path) == ["state/progress/00000001-101.json"]


@pytest.mark.parametrize(
    ("state_uri", "executor"),
    [
        ("file:///srv/state", "CeleryExecutor"),
        ("/srv/state", "KubernetesExecutor"),
        ("file:///srv/state", "LocalExecutor,CeleryExecutor"),
        ("file:///srv/state", "airflow.providers.celery.executors.celery_executor.CeleryExecutor"),
    ],
    ids=["file-uri-celery", "bare-path-kubernetes", "multiple-executors", "executor-by-path"],
)
def test_local_state_on_a_distributed_executor_is_refused(state_uri: str, executor: str) -> None:
    with pytest.raises(KlaviyoConfigError, match="state_uri") as raised:
        refuse_local_state_on_distributed_executor(state_uri, executor)

    assert state_uri in str(raised.value)


@pytest.mark.parametrize(
    ("state_uri", "executor"),
    [("file:///srv/state", "LocalExecutor"), ("s3://aws_default@bucket/state", "CeleryExecutor")],
    ids=["local-executor", "object-storage"],
)
def test_shared_or_single_machine_state_is_accepted(state_uri: str, executor: str) -> None:
    refuse_local_state_on_distributed_executor(state_uri, executor)
