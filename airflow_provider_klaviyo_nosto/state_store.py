"""Where the applied state lives: a folder in Airflow's object storage that every worker can reach.

The file formats belong to :mod:`airflow_provider_klaviyo_nosto.sync.state`; this module only decides
where each file goes and how it is written, so that the pure core never touches storage.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.sync import state as state_files
from airflow_provider_klaviyo_nosto.sync.model import ContactChange, ContactRecord
from airflow_provider_klaviyo_nosto.sync.state import AppliedState

#: Executors that run tasks on more than one machine; a local folder would give each worker its own state.
DISTRIBUTED_EXECUTORS = ("CeleryExecutor", "KubernetesExecutor", "EdgeExecutor", "CeleryKubernetesExecutor")


def default_state_uri() -> str:
    """The default applied-state folder: ``klaviyo_nosto_state`` under ``AIRFLOW_HOME``."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/klaviyo_nosto_state"


def refuse_local_state_on_distributed_executor(state_uri: str, executor: str) -> None:
    """
    Refuse a local state folder when tasks may run on different machines.

    Each push task records what Klaviyo confirmed in the state folder; on a Celery or Kubernetes worker a
    local path would be a different disk for every task, and the next run would resend everything.

    :param state_uri: the configured state location.
    :param executor: the ``[core] executor`` setting.
    """
    local = state_uri.startswith("file://") or "://" not in state_uri
    if local and any(name in executor for name in DISTRIBUTED_EXECUTORS):
        raise KlaviyoConfigError(
            f"state_uri {state_uri!r} is a local path, but the executor {executor!r} runs tasks on several "
            "machines. Set state_uri in the sync configuration to a shared object-storage location such as "
            "s3://<conn_id>@bucket/klaviyo_nosto_state."
        )


def refuse_relative_local_state(state_uri: str) -> None:
    """
    Refuse a local state folder given relative to the working directory (``file://state``, ``state``).

    A task's working directory is not the same from run to run, so such a folder would be found empty: every
    run would look like the first, resend everyone and never remove a contact who left Nosto.

    :param state_uri: the configured state location.
    """
    if state_uri.startswith("file://"):
        path = state_uri[len("file://") :]
    elif "://" not in state_uri:
        path = state_uri
    else:
        return
    if not path.startswith("/"):
        raise KlaviyoConfigError(
            f"state_uri {state_uri!r} is a path relative to the task's working directory, which changes from "
            f"run to run. Use an absolute path with three slashes, such as 'file:///{path}' for /{path}, or a "
            "shared object-storage location such as s3://<conn_id>@bucket/klaviyo_nosto_state."
        )


def refuse_unsupported_storage(
    setting: str,
    uri: str,
    *,
    also_served: tuple[str, ...] = (),
    where: str = "in the sync configuration",
    error: type[Exception] = KlaviyoConfigError,
) -> None:
    """
    Refuse a location whose scheme no filesystem of Airflow's object storage serves here (``foo://``, or
    ``gs://`` without the Google provider), naming the setting rather than failing inside the first read.

    :param setting: the key holding ``uri``, for the message.
    :param uri: the configured location; one without a scheme is a local path.
    :param also_served: schemes read without object storage (``https`` for the export).
    :param where: where ``setting`` is set, for the message.
    :param error: the exception class to raise.
    """
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if scheme in also_served:
        return
    try:
        _ = ObjectStoragePath(uri).fs  # Airflow looks the filesystem up on access
    except (ValueError, ImportError):
        alternatives = " or an https:// URL" if "https" in also_served else ""
        raise error(
            f"{setting} {where} uses {scheme}://, which no filesystem installed for Airflow's "
            "object storage serves. Install the Airflow provider of that store on every Airflow component, such "
            "as apache-airflow-providers-amazon[s3fs] for s3://, apache-airflow-providers-google for gs:// or "
            f"apache-airflow-providers-microsoft-azure for abfs://; or use a file:/// path{alternatives}."
        ) from None


class StateStore:
    """
    Reads and writes the applied state, diff, journal and progress files under one folder.

    :param state_uri: an Airflow object-storage URI (``file://``, ``s3://``, ``gs://``, ...).
    """

    def __init__(self, state_uri: str) -> None:
        self.uri = state_uri
        self.root = ObjectStoragePath(state_uri)

    # -- the snapshot --------------------------------------------------------------------------------

    def load(self) -> tuple[AppliedState, list[ObjectStoragePath]]:
        """
        Load the snapshot and fold every journal written since into it.

        :return: the state, and the journal files folded in (to delete once the state is saved).
        """
        state = self.load_meta()
        contacts_path = self.root / state_files.CONTACTS_FILE
        if contacts_path.exists():
            with contacts_path.open("rb") as stream:
                state.contacts = state_files.read_contacts(stream)
        elif state.generation > 0:
            # save() writes the snapshot before meta.json, even an empty one, so this is a lost file: planning
            # against nobody would resend everyone and never remove a contact who leaves Nosto.
            raise KlaviyoConfigError(
                f"The applied state in {self.uri} has {state_files.META_FILE} (generation {state.generation}) "
                f"but no {state_files.CONTACTS_FILE}, the record of every contact the sync wrote to Klaviyo; "
                "without it the sync cannot tell whom it added. Restore that file from a backup of the folder; "
                "or, to start over, point state_uri at a new, empty folder: the next run compares with nothing "
                "and writes every contact again."
            )

        journals = sorted(self._journal_paths(), key=lambda p: state_files.parse_journal_name(p.name))
        state_files.fold_journals(state.contacts, self._read_journals(journals))
        return state, journals

    def load_meta(self) -> AppliedState:
        meta_path = self.root / state_files.META_FILE
        if not meta_path.exists():
            return AppliedState.empty()
        return state_files.load_meta(meta_path.read_bytes())

    def save(self, state: AppliedState, folded_journals: Iterable[ObjectStoragePath] = ()) -> None:
        """
        Save the snapshot, then the metadata, then drop the journals already folded into the snapshot.

        The order matters when the process dies half-way: journals hold whole per-contact values, so
        folding a journal a second time onto a snapshot that already contains it changes nothing.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_atomically(
            state_files.CONTACTS_FILE, lambda s: state_files.write_contacts(s, state.contacts)
        )
        self._write_atomically(state_files.META_FILE, lambda s: s.write(state_files.dump_meta(state)))
        for journal in folded_journals:
            journal.unlink(missing_ok=True)

    # -- stored spellings of emails ------------------------------------------------------------------

    def read_email_aliases(self) -> tuple[str | None, dict[str, str]]:
        """Return the last profile scan's watermark and ``{normalised email: Klaviyo's spelling}``."""
        path = self.root / state_files.ALIASES_FILE
        if not path.exists():
            return None, {}
        return state_files.load_email_aliases(path.read_bytes())

    def write_email_aliases(self, scanned_at: str, aliases: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        body = state_files.dump_email_aliases(scanned_at, aliases)
        self._write_atomically(state_files.ALIASES_FILE, lambda s: s.write(body))

    # -- diffs ---------------------------------------------------------------------------------------

    def diff_path(self, generation: int, key: str) -> ObjectStoragePath:
        return self.root / "diffs" / f"{generation:08d}" / f"{key}.jsonl.gz"

    def write_diff(self, generation: int, key: str, changes: Iterable[ContactChange]) -> str:
        path = self.diff_path(generation, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as stream:
            state_files.write_diff(stream, changes)
        return str(path)

    def read_diff(self, generation: int, key: str) -> list[ContactChange]:
        with self.diff_path(generation, key).open("rb") as stream:
            return list(state_files.read_diff(stream))

    def delete_diff(self, generation: int, key: str) -> None:
        self.diff_path(generation, key).unlink(missing_ok=True)
        self.progress_path(generation, key).unlink(missing_ok=True)

    def delete_stale_diffs(self, below_generation: int) -> int:
        """Delete the diff and progress files of generations a newer plan has superseded."""
        removed = 0
        diffs = self.root / "diffs"
        if diffs.exists():
            for folder in diffs.iterdir():
                if folder.name.isdigit() and int(folder.name) < below_generation:
                    for path in folder.iterdir():
                        path.unlink(missing_ok=True)
                        removed += 1
                    # An object store (S3, GCS) has no folders: there the prefix went with its last file.
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        folder.rmdir()
        progress = self.root / "progress"
        if progress.exists():
            for path in progress.iterdir():
                if path.name[:8].isdigit() and int(path.name[:8]) < below_generation:
                    path.unlink(missing_ok=True)
        return removed

    # -- progress of one push (bulk jobs already accepted) -------------------------------------------

    def progress_path(self, generation: int, key: str) -> ObjectStoragePath:
        return self.root / "progress" / f"{generation:08d}-{key}.json"

    def read_progress(self, generation: int, key: str) -> dict[str, Any]:
        path = self.progress_path(generation, key)
        if not path.exists():
            return {}
        return state_files.load_progress(path.read_bytes(), part=f"progress/{path.name}")

    def write_progress(self, generation: int, key: str, progress: dict[str, Any]) -> None:
        path = self.progress_path(generation, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(
            f"progress/{path.name}", lambda s: s.write(json.dumps(progress, sort_keys=True).encode())
        )

    # -- journals ------------------------------------------------------------------------------------

    def write_journal(self, generation: int, key: str, records: Iterable[tuple[str, ContactRecord]]) -> None:
        folder = self.root / "journal"
        folder.mkdir(parents=True, exist_ok=True)
        name = state_files.journal_name(generation, key)
        self._write_atomically(f"journal/{name}", lambda s: state_files.write_journal(s, records))

    def _journal_paths(self) -> list[ObjectStoragePath]:
        folder = self.root / "journal"
        if not folder.exists():
            return []
        return [p for p in folder.iterdir() if p.name.endswith(".jsonl.gz")]

    def _read_journals(
        self, paths: list[ObjectStoragePath]
    ) -> Iterator[tuple[int, str, Iterable[tuple[str, ContactRecord]]]]:
        for path in paths:
            generation, key = state_files.parse_journal_name(path.name)
            with path.open("rb") as stream:
                yield generation, key, list(state_files.read_journal(stream))

    # -- plumbing ------------------------------------------------------------------------------------

    def _write_atomically(self, relative: str, write: Callable[[IO[bytes]], object]) -> None:
        """Write to a temporary name and rename, so a reader never sees half a file."""
        target = self.root / relative
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with temporary.open("wb") as stream:
            write(stream)
        temporary.rename(target)
