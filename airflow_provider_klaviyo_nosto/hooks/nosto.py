"""Hook for Nosto: the GraphQL segment catalogue and the Segment Export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any, cast
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_klaviyo_nosto.exceptions import NostoAuthError, NostoConfigError, NostoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import (
    is_loopback_host,
    refuse_unsendable_secret,
    resolve_base_url,
    tls_verify_setting,
    unreadable_connection,
    untrusted_certificate,
)
from airflow_provider_klaviyo_nosto.hooks.retry import (
    RetryPolicy,
    certificate_refused,
    parse_retry_after,
    single_attempt,
)
from airflow_provider_klaviyo_nosto.state_store import refuse_unsupported_storage
from airflow_provider_klaviyo_nosto.sync.masking import redact
from airflow_provider_klaviyo_nosto.sync.model import Segment

DEFAULT_BASE_URL = "https://api.nosto.com"
#: Said in a task's error where retrying is what helps; left out of a connection test's answer.
TASK_ADVICE = " Nothing was written; retry the task."
EXPORT_PATH = "/v1/segment-export/latest"
SEGMENTS_QUERY = "query { segments { segments { id name } } }"
EXPORT_CREDENTIAL = "'export_token' in the extra"


class NostoHook(BaseHook):
    """Read Nosto's segment catalogue (GraphQL) and its daily Segment Export.

    The connection's password is the API_APPS token (HTTP Basic, empty user name, as Nosto's GraphQL
    API expects); the extra holds ``export_token``, the Segment Export's own token, sent as a Bearer
    header and never put in a URL, and optionally ``export_url``. The host overrides
    ``https://api.nosto.com`` (no scheme means https; plain http only for loopback hosts).

    :param nosto_conn_id: the Airflow connection of type ``nosto``.
    :param timeout: ``(connect, read)`` timeouts in seconds.
    :param max_attempts: attempts per call, the first included.
    :param max_retry_wait: the longest ``Retry-After`` slept through, in seconds.
    """

    conn_name_attr = "nosto_conn_id"
    default_conn_name = "nosto_default"
    conn_type = "nosto"
    hook_name = "Nosto"

    def __init__(
        self,
        nosto_conn_id: str = default_conn_name,
        *,
        timeout: tuple[float, float] = (10.0, 120.0),
        max_attempts: int = 6,
        max_retry_wait: float = 60.0,
    ) -> None:
        super().__init__()
        self.nosto_conn_id = nosto_conn_id
        self.timeout = timeout
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
            ceiling_error=lambda _exc, wait, ceiling: NostoError(
                f"Nosto asked to wait {wait:.0f} s, longer than the {ceiling:.0f} s ceiling", status=429
            ),
        )
        self._conn_settings: dict[str, Any] | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form layout (read by Airflow 3.1; 3.2+ reads the provider info)."""
        return {
            "hidden_fields": ["login", "schema", "port"],
            "relabeling": {"password": "API_APPS token", "host": "API base URL"},
            "placeholders": {
                "host": DEFAULT_BASE_URL,
                "password": "API_APPS token",
                "extra": '{"export_token": "...", "export_url": "https://.../segment-export.jsonl.gz"}',
            },
        }

    # -- connection ---------------------------------------------------------------------------

    @property
    def _settings(self) -> dict[str, Any]:
        if self._conn_settings is None:
            try:
                conn = self.get_connection(self.nosto_conn_id)
            except AirflowNotFoundException:
                raise
            except Exception as exc:
                raise unreadable_connection(
                    self.nosto_conn_id,
                    exc,
                    '{"export_token": "..."}',
                    error=NostoConfigError,
                    transient_error=NostoError,
                ) from None
            extra: Any = {}
            if conn.extra:
                try:
                    extra = json.loads(conn.extra)
                except json.JSONDecodeError as exc:
                    raise NostoConfigError(
                        f"The extra of Airflow connection {self.nosto_conn_id!r} is not valid JSON "
                        f"({exc.msg} at character {exc.pos})"
                    ) from None
            if not isinstance(extra, dict):
                raise NostoConfigError(
                    f"The extra of Airflow connection {self.nosto_conn_id!r} must be a JSON object"
                )
            base_url = resolve_base_url(
                conn.host, DEFAULT_BASE_URL, self.nosto_conn_id, error=NostoConfigError
            )
            export_url = str(extra.get("export_url") or "").strip() or None
            # The export may live on another host than the API; verification may only be off if both are local.
            hosts = [urlsplit(base_url).hostname]
            if export_url:
                located = export_url if "://" in export_url else f"https://{export_url}"
                try:
                    hosts.append(urlsplit(located).hostname)
                except ValueError as exc:
                    raise NostoConfigError(
                        f"Connection {self.nosto_conn_id!r}: 'export_url' in the extra is not a valid URL ({exc})"
                    ) from None
                refuse_unsupported_storage(
                    "'export_url'",
                    located,
                    also_served=("http", "https"),
                    where=f"in the extra of Airflow connection {self.nosto_conn_id!r}",
                    error=NostoConfigError,
                )
            remote = next((host for host in hosts if not is_loopback_host(host)), hosts[0])
            token = (conn.password or "").strip()
            export_token = str(extra.get("export_token") or "").strip()
            refuse_unsendable_secret(token, self.nosto_conn_id, "the password field", error=NostoConfigError)
            refuse_unsendable_secret(
                export_token, self.nosto_conn_id, "'export_token' in the extra", error=NostoConfigError
            )
            self._conn_settings = {
                "base_url": base_url,
                "verify": tls_verify_setting(extra, remote, self.nosto_conn_id, error=NostoConfigError),
                "token": token,
                "export_token": export_token,
                "export_url": export_url,
            }
        return self._conn_settings

    def _scrub(self, text: str) -> str:
        """Mask the connection's tokens and any email in text bound for a log or an exception."""
        for secret in (self._settings["token"], self._settings["export_token"]):
            if secret:
                text = text.replace(secret, "***")
        return redact(text)

    def _send(self, method: str, url: str, *, credential: str, **kwargs: Any) -> requests.Response:
        """Send one request with the shared retry policy (all Nosto calls here are reads).

        :param credential: where the token this call sends lives in the connection, named in the error
            when Nosto refuses it, so that the admin knows what to fix.
        """

        def attempt() -> requests.Response:
            response = requests.request(
                method, url, timeout=self.timeout, verify=self._settings["verify"], **kwargs
            )
            if response.status_code in (401, 403):
                status = response.status_code
                response.close()
                raise NostoAuthError(
                    f"Nosto refused {method} {urlsplit(url).path} with {status}: check {credential} of Airflow "
                    f"connection {self.nosto_conn_id!r} (the token may be revoked, or lack access to this API)",
                    status=status,
                    retryable=False,
                )
            if response.status_code >= 400:
                status = response.status_code
                response.close()
                raise NostoError(
                    f"Nosto answered {method} {urlsplit(url).path} with {status}",
                    status=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            return response

        def log_retry(retry_state: Any) -> None:
            exc = retry_state.outcome.exception()
            self.log.warning(
                "Nosto %s %s failed (%s); attempt %d, retrying",
                method,
                urlsplit(url).path,
                self._scrub(f"{type(exc).__name__}: {exc}"),
                retry_state.attempt_number,
            )

        try:
            return self.retry_policy.retrying(idempotent=True, before_sleep=log_retry)(attempt)
        except requests.exceptions.InvalidURL as exc:
            raise NostoConfigError(
                f"Nosto {method}: {self._scrub(str(exc))}. Check the host and 'export_url' of Airflow connection "
                f"{self.nosto_conn_id!r}, and 'export_uri' in the sync configuration"
            ) from None
        except requests.RequestException as exc:
            if certificate_refused(exc):
                raise untrusted_certificate(
                    f"Nosto {method} {urlsplit(url).path}",
                    self._scrub(f"{type(exc).__name__}: {exc}"),
                    self.nosto_conn_id,
                    error=NostoConfigError,
                ) from None
            raise NostoError(
                f"Could not reach Nosto for {method} {urlsplit(url).path}: "
                f"{self._scrub(f'{type(exc).__name__}: {exc}')}"
            ) from None

    # -- catalogue ----------------------------------------------------------------------------

    def get_segments(self) -> list[Segment]:
        """Return every segment of the Nosto account (id and current name)."""
        token = self._settings["token"]
        if not token:
            raise NostoConfigError(f"Connection {self.nosto_conn_id!r} has no API_APPS token in its password")
        response = self._send(
            "POST",
            f"{self._settings['base_url']}/v1/graphql",
            json={"query": SEGMENTS_QUERY},
            auth=("", token),
            credential="the API_APPS token in the password",
        )
        try:
            document = response.json()
        except ValueError:
            raise NostoError("Nosto's GraphQL answer is not JSON") from None
        if document.get("errors"):
            messages = "; ".join(str(e.get("message", e)) for e in document["errors"] if isinstance(e, dict))
            raise NostoError(
                f"Nosto's GraphQL API answered with errors: {self._scrub(messages)}.{TASK_ADVICE} If it persists, "
                f"check that the API_APPS token of Airflow connection {self.nosto_conn_id!r} may read segments"
            )
        try:
            items = document["data"]["segments"]["segments"]
            return [Segment(id=str(item["id"]), name=str(item["name"])) for item in items]
        except (KeyError, TypeError):
            raise NostoError("Nosto's GraphQL answer has no data.segments.segments list") from None

    def test_connection(self) -> tuple[bool, str]:
        """Check the API_APPS token by reading the segment catalogue."""
        try:
            with single_attempt(self):
                segments = self.get_segments()
        except Exception as exc:
            message = self._scrub(str(exc)) if self._conn_settings else redact(str(exc))
            return False, message.replace(TASK_ADVICE, "")
        return True, f"Connected to Nosto; {len(segments)} segments in the catalogue"

    # -- export -------------------------------------------------------------------------------

    def export_uri(self, uri: str | None = None) -> str:
        """Return where the export is read from: ``uri``, the connection's ``export_url``, or the default.

        :param uri: an explicit location; a bare host or path without scheme means https.
        """
        uri = uri or self._settings["export_url"] or f"{self._settings['base_url']}{EXPORT_PATH}"
        if "://" not in uri:
            uri = f"https://{uri}"
        return uri

    def _is_http(self, uri: str) -> bool:
        parts = urlsplit(uri)
        verify_off = self._settings["verify"] is False
        if parts.scheme in ("http", "https") and verify_off and not is_loopback_host(parts.hostname):
            raise NostoConfigError(
                f"Connection {self.nosto_conn_id!r} switches TLS verification off, which is only allowed "
                f"for loopback hosts, but the export is read from {parts.hostname}; remove 'verify: false'"
            )
        if parts.scheme == "https":
            return True
        if parts.scheme == "http":
            if not is_loopback_host(parts.hostname):
                raise NostoConfigError(
                    f"Refusing to send the export token over plain http to {parts.hostname}; use https"
                )
            return True
        return False

    def _export_headers(self) -> dict[str, str]:
        token = self._settings["export_token"]
        if not token:
            raise NostoConfigError(
                f"Connection {self.nosto_conn_id!r} has no 'export_token' in its extra; the Segment Export "
                "needs its own token"
            )
        return {"Authorization": f"Bearer {token}"}

    @contextmanager
    def open_export(self, uri: str | None = None) -> Iterator[IO[bytes]]:
        """Open the export for reading, as raw bytes (gzip is left to the caller).

        HTTPS URLs (and loopback ``http://``) are streamed with the export token in an
        ``Authorization`` header; any other scheme (``file://``, ``s3://``, ``gs://``...) is opened
        through Airflow's object storage, with the credentials of its own connection.

        :param uri: see :meth:`export_uri`.
        """
        uri = self.export_uri(uri)
        if self._is_http(uri):
            try:
                response = self._send(
                    "GET", uri, headers=self._export_headers(), stream=True, credential=EXPORT_CREDENTIAL
                )
            except NostoError as exc:
                if exc.status != 404:
                    raise
                raise NostoError(
                    f"No Segment Export at {urlsplit(uri).path} (404); nothing was written. Nosto writes it once "
                    "a day: check that the Segment Export is switched on in Nosto and that 'export_url' of Airflow "
                    f"connection {self.nosto_conn_id!r} (or 'export_uri' in the sync configuration) points at it",
                    status=404,
                ) from None
            try:
                # Undo only transport encoding; a .gz file stays gzip for the caller.
                response.raw.decode_content = True
                yield cast("IO[bytes]", response.raw)
            finally:
                response.close()
            return

        from airflow.sdk import ObjectStoragePath

        try:
            handle = ObjectStoragePath(uri).open("rb")
        except FileNotFoundError:
            raise NostoError(
                f"No export at {redact(uri)}; nothing was written. Check 'export_uri' in the sync configuration"
            ) from None
        with handle:
            yield cast("IO[bytes]", handle)

    def export_modified_at(self, uri: str | None = None) -> datetime | None:
        """Return when the export was last written (UTC), or ``None`` if there is none yet.

        :param uri: see :meth:`export_uri`.
        """
        uri = self.export_uri(uri)
        if self._is_http(uri):
            try:
                response = self._send(
                    "HEAD",
                    uri,
                    headers=self._export_headers(),
                    allow_redirects=True,
                    credential=EXPORT_CREDENTIAL,
                )
            except NostoError as exc:
                if exc.status == 404:
                    return None
                raise
            last_modified = response.headers.get("Last-Modified")
            if not last_modified:
                raise NostoError(f"Nosto's export at {urlsplit(uri).path} has no Last-Modified header")
            modified = parsedate_to_datetime(last_modified)
            return modified if modified.tzinfo else modified.replace(tzinfo=UTC)

        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(uri)
        if not path.exists():
            return None
        return _stat_mtime(path.stat(), uri)


def _stat_mtime(info: Any, uri: str) -> datetime:
    """Read a modification time from an fsspec ``info`` dict, whose keys differ by file system."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise NostoError(f"The object store reports no modification time for {redact(uri)}")
