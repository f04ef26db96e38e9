"""Hook for Klaviyo's JSON:API (private-key auth, revision pinned in code)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import requests
import tenacity
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.providers.http.hooks.http import HttpHook
from requests.structures import CaseInsensitiveDict

from airflow_provider_klaviyo_nosto import __version__
from airflow_provider_klaviyo_nosto.exceptions import (
    KlaviyoAuthError,
    KlaviyoClientError,
    KlaviyoConfigError,
    KlaviyoError,
    KlaviyoPaginationError,
    KlaviyoPermissionError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
)
from airflow_provider_klaviyo_nosto.hooks.pacing import KlaviyoPacer, endpoint_template
from airflow_provider_klaviyo_nosto.hooks.retry import (
    RetryPolicy,
    certificate_refused,
    parse_retry_after,
    single_attempt,
)
from airflow_provider_klaviyo_nosto.sync.masking import redact

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_BASE_URL = "https://a.klaviyo.com"
JSON_API = "application/vnd.api+json"

#: Klaviyo's documented caps per call; asking for more is a 400, not a bigger page.
LIST_PAGE_SIZE = 10
PAGE_SIZE = 100
LIST_MEMBERSHIP_CHUNK = 1000
EMAIL_FILTER_CHUNK = 100
#: ``page[size]`` caps per path template; endpoints not listed here take up to :data:`PAGE_SIZE`.
PAGE_SIZE_CAPS = {"/api/lists": LIST_PAGE_SIZE, "/api/segments": LIST_PAGE_SIZE}

#: The scopes each call needs (``x-klaviyo-scopes`` in the 2026-07-15 spec), named in 403 errors so
#: that an admin knows what to add to the key instead of guessing.
REQUIRED_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/api/accounts"): ("accounts:read",),
    ("GET", "/api/lists"): ("lists:read",),
    ("GET", "/api/lists/{id}"): ("lists:read",),
    ("POST", "/api/lists"): ("lists:write",),
    ("PATCH", "/api/lists/{id}"): ("lists:write",),
    ("GET", "/api/lists/{id}/profiles"): ("lists:read", "profiles:read"),
    ("GET", "/api/lists/{id}/relationships/profiles"): ("lists:read", "profiles:read"),
    ("POST", "/api/lists/{id}/relationships/profiles"): ("lists:write", "profiles:write"),
    ("DELETE", "/api/lists/{id}/relationships/profiles"): ("lists:write", "profiles:write"),
    ("GET", "/api/lists/{id}/flow-triggers"): ("flows:read", "lists:read"),
    ("GET", "/api/lists/{id}/relationships/flow-triggers"): ("flows:read", "lists:read"),
    ("GET", "/api/profiles"): ("profiles:read",),
    ("POST", "/api/profiles"): ("profiles:write",),
    ("PATCH", "/api/profiles/{id}"): ("profiles:write",),
    ("POST", "/api/profile-import"): ("profiles:write",),
    ("POST", "/api/profile-bulk-import-jobs"): ("lists:write", "profiles:write"),
    ("GET", "/api/profile-bulk-import-jobs"): ("lists:read", "profiles:read"),
    ("GET", "/api/profile-bulk-import-jobs/{id}"): ("lists:read", "profiles:read"),
    ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors"): ("profiles:read",),
    ("GET", "/api/profile-bulk-import-jobs/{id}/profiles"): ("profiles:read",),
    ("GET", "/api/profile-bulk-import-jobs/{id}/relationships/profiles"): ("profiles:read",),
    ("GET", "/api/profile-bulk-import-jobs/{id}/lists"): ("lists:read",),
    ("GET", "/api/segments"): ("segments:read",),
    ("POST", "/api/segments"): ("segments:write",),
    ("GET", "/api/segments/{id}"): ("segments:read",),
    ("PATCH", "/api/segments/{id}"): ("segments:write",),
    ("GET", "/api/segments/{id}/flow-triggers"): ("flows:read", "segments:read"),
}

#: What to do about a fault that Klaviyo or the network may not repeat, appended to its error.
RETRY_HINT = (
    "Retry the task (Airflow does so by itself while it has retries left); it resumes from what Klaviyo "
    "confirmed, so nothing is lost or imported twice."
)
CEILING_ADVICE = (
    "Failing now so that the task can be retried later instead of holding a worker: give the task retries "
    "with a retry_delay of at least that wait, or clear it then."
)

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class BulkImportJobStatus(StrEnum):
    """The status of a profile bulk import job, exactly as Klaviyo's spec enumerates it.

    There is no ``failed`` status: a job whose profiles all failed still ends ``complete``, with
    ``failed_count`` telling how many, and the reasons are read from the job's import errors.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETE = "complete"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (BulkImportJobStatus.COMPLETE, BulkImportJobStatus.CANCELLED)


@dataclass(frozen=True)
class BulkImportJob:
    """What Klaviyo reports about one bulk import job."""

    id: str
    status: BulkImportJobStatus
    total_count: int
    completed_count: int
    failed_count: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-native summary (for trigger events and XCom; it holds no email)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "total_count": self.total_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
        }


@dataclass(frozen=True)
class BulkImportError:
    """One profile Klaviyo could not import.

    :param email: the address as submitted (``original_payload.attributes.email``), for mapping the
        failure back to the contact; never log it unmasked.
    :param code: Klaviyo's error code.
    :param detail: Klaviyo's explanation, masked.
    :param pointer: the JSON:API pointer of the offending field, masked.
    """

    email: str | None
    code: str | None
    detail: str
    pointer: str | None = None


@dataclass(frozen=True)
class BulkImportSubmission:
    """The result of submitting one bulk import.

    :param job_id: the id of the accepted job; ``None`` only when Klaviyo rejected every profile.
    :param rejected: indexes (into the list the caller passed) of profiles Klaviyo refused before
        creating the job, with its masked reason.
    """

    job_id: str | None
    rejected: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KlaviyoConnectionSettings:
    """What the hook takes from its Airflow connection, validated."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: tuple[float, float]
    proxies: dict[str, str]
    verify: bool | str

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": KlaviyoHook.REVISION,
            "accept": JSON_API,
            "content-type": JSON_API,
            "User-Agent": _user_agent(),
        }


def _user_agent() -> str:
    from airflow import __version__ as airflow_version

    return f"airflow-provider-klaviyo-nosto/{__version__} apache-airflow/{airflow_version}"


def is_loopback_host(hostname: str | None) -> bool:
    """Tell whether a host name is this machine (the only place plain http or no TLS check is allowed)."""
    if not hostname:
        return False
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(host: str | None, default: str, conn_id: str, *, error: type[Exception]) -> str:
    """Turn a connection host into a base URL: no scheme means https, http only for loopback hosts.

    :param host: the connection's host field (a bare host, a URL, or empty for the default).
    :param default: the service's public base URL.
    :param conn_id: the connection id, for error messages.
    :param error: the exception class to raise.
    """
    url = (host or "").strip() or default
    if "://" not in url:
        url = f"https://{url}"
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed on access: a port out of range or not a number raises here
    except ValueError as exc:
        # Not echoed: the host may hold a key before an '@'.
        raise error(
            f"Connection {conn_id!r}: the host is not a valid URL ({exc}); give the API's base URL, such as "
            f"{default}"
        ) from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before '@' is often the key itself.
        raise error(
            f"Connection {conn_id!r}: the host holds a user name or password before '@'; put the key in the "
            f"connection's password field and only the base URL ({default}) in the host"
        )
    # Quoted without its query and fragment, which may hold a token pasted with an endpoint's URL.
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"Connection {conn_id!r}: host {shown!r} is not an http(s) URL or host name")
    if parts.path.strip("/") or parts.query or parts.fragment:
        # The hooks add every endpoint's whole path; a pasted endpoint would be doubled (/api/api/...).
        raise error(
            f"Connection {conn_id!r}: host {shown!r} has a path, query or fragment; give only the API's base "
            f"URL, such as {default}"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise error(
            f"Connection {conn_id!r}: plain http is only allowed for loopback hosts (the local sandbox); "
            f"use https://{parts.netloc}{parts.path}"
        )
    try:
        # The check requests makes before sending, which would otherwise fail every call as a transport fault.
        requests.models.PreparedRequest().prepare_url(url, None)
    except requests.exceptions.InvalidURL as exc:
        raise error(
            f"Connection {conn_id!r}: host {url!r} is not a usable URL ({exc}); give the API's base URL, such "
            f"as {default}"
        ) from None
    return url.rstrip("/")


def refuse_unsendable_secret(secret: str, conn_id: str, field_name: str, *, error: type[Exception]) -> None:
    """Refuse a key or token that an HTTP header cannot carry, such as one pasted with a curly quote.

    Such a key could never authenticate, and requests would fail on every call with an encoding error.

    :param secret: the key or token; never part of the message.
    :param conn_id: the connection id, for error messages.
    :param field_name: where the secret lives in the connection, e.g. ``the password field``.
    :param error: the exception class to raise.
    """
    if not (secret.isascii() and secret.isprintable()):
        raise error(
            f"Connection {conn_id!r}: the key in {field_name} holds a character an HTTP header cannot carry, "
            "such as a zero-width space, a curly quote or a line break pasted with it; type or paste the key "
            "again, without quotes"
        )


#: Connection extras that requests, HttpHook or habit use to switch TLS certificate checks off.
_VERIFY_KEYS = ("verify", "verify_ssl", "ssl_verify")
_FALSE_WORDS = frozenset({"false", "0", "no", "off", "none", ""})


def tls_verify_setting(
    extra: Mapping[str, Any], hostname: str | None, conn_id: str, *, error: type[Exception]
) -> bool | str:
    """Read the TLS verification setting of a connection's extra: ``True``, ``False`` or a CA bundle path.

    ``false``-like values in any of the usual spellings (``verify``, ``verify_ssl``, ``ssl_verify``, the
    strings ``"false"``/``"0"``/``"no"``, ``"insecure": true``) switch verification off, and that is only
    allowed for loopback hosts (the local sandbox): a customer's key sent to a host whose certificate is
    not checked can be read by anyone in between.

    :param extra: the connection's parsed extra.
    :param hostname: the host the hook talks to.
    :param conn_id: the connection id, for error messages.
    :param error: the exception class to raise.
    """
    verify: bool | str = True
    verify_key = ""
    for key in _VERIFY_KEYS:
        if key not in extra:
            continue
        value = extra[key]
        if isinstance(value, str) and value.strip().lower() in _FALSE_WORDS:
            value = False
        elif isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            value = True
        if not isinstance(value, bool | str):
            raise error(
                f"Connection {conn_id!r}: extra {key!r} must be true/false or the path of a CA bundle"
            )
        if value is not True:
            verify, verify_key = value, key
    if extra.get("insecure") not in (None, False, "false", "0", ""):
        verify = False
    if verify is False and not is_loopback_host(hostname):
        raise error(
            f"Connection {conn_id!r}: TLS certificate verification cannot be switched off for {hostname} "
            "(only for loopback hosts such as the local sandbox); remove 'verify: false' from the extra, or "
            "give the path of your CA bundle in 'verify'"
        )
    if isinstance(verify, str) and not os.path.isabs(verify):
        raise error(
            f"Connection {conn_id!r}: extra {verify_key!r} must be an absolute path (it is {verify!r}); a relative "
            "path would be read from each worker's and the triggerer's own working folder"
        )
    if isinstance(verify, str) and not os.path.exists(verify):
        raise error(
            f"Connection {conn_id!r}: extra {verify_key!r} names the CA bundle {verify!r}, which does not exist "
            "on this machine; give the path of a PEM file present on every worker and on the triggerer, or "
            f"remove {verify_key!r} to use the system's certificates"
        )
    if isinstance(verify, str):
        try:
            _require_ca_certificates(verify)
        except (ssl.SSLError, OSError, ValueError):
            raise error(
                f"Connection {conn_id!r}: extra {verify_key!r} names {verify!r}, which holds no CA certificate "
                "this machine can read; give a PEM file of CA certificates (or a folder prepared with "
                f"'openssl rehash'), or remove {verify_key!r} to use the system's certificates"
            ) from None
    return verify


def ca_context(path: str) -> ssl.SSLContext:
    """Return a TLS context trusting the CA certificates at ``path``: a PEM bundle, or a hashed folder of them
    (both forms requests accepts as ``verify``).

    :param path: the connection's ``verify`` value.
    """
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)


#: How ``openssl rehash`` names the certificates in a CA folder: the subject hash and a sequence number.
_HASHED_CERTIFICATE = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def _require_ca_certificates(path: str) -> None:
    """Raise unless ``path`` holds a CA certificate: a folder's are loaded only when a handshake needs them,
    so each hashed file in it is loaded here, once, to find a wrong file or a folder never rehashed."""
    if not os.path.isdir(path):
        ca_context(path)
        return
    hashed = [entry.path for entry in os.scandir(path) if _HASHED_CERTIFICATE.fullmatch(entry.name)]
    if not hashed:
        raise ValueError("no certificate named by its subject hash")
    for certificate in hashed:
        ssl.create_default_context(cafile=certificate)


#: What a connection look-up raises for a connection it cannot parse (Airflow 3.1 refuses an extra that is
#: not a JSON object while looking the connection up); anything else, such as a secrets backend timing out,
#: may pass by itself.
UNPARSABLE_CONNECTION_ERRORS = (ValueError, TypeError, KeyError, ImportError)


def unreadable_connection(
    conn_id: str,
    exc: Exception,
    example_extra: str,
    *,
    error: type[Exception],
    transient_error: type[Exception],
) -> Exception:
    """The error for a connection that could not be looked up, without chaining the original (secrets backends
    may quote the connection in it): a config error when it could not be parsed, else one Airflow retries."""
    if isinstance(exc, UNPARSABLE_CONNECTION_ERRORS):
        return error(
            f"Airflow connection {conn_id!r} could not be read ({type(exc).__name__}); check that its extra "
            f"is a valid JSON object, such as {example_extra}"
        )
    return transient_error(
        f"Airflow connection {conn_id!r} could not be looked up ({type(exc).__name__}); the task is retried. If "
        "this persists, check the secrets backend or the Airflow API server the workers read connections from"
    )


def untrusted_certificate(call: str, detail: str, conn_id: str, *, error: type[Exception]) -> Exception:
    """The error for a server certificate that failed verification: a setting to fix, so it names the setting.

    :param call: the call that failed, such as ``"Klaviyo GET /api/lists"``.
    :param detail: the transport error, already masked.
    """
    return error(
        f"{call}: the server's TLS certificate is not trusted ({detail}). If a proxy re-signs TLS, name its CA in "
        f"'verify' in the extra of Airflow connection {conn_id!r} (see docs/connections.md)."
    )


def _unreadable_connection(conn_id: str, exc: Exception) -> Exception:
    return unreadable_connection(
        conn_id, exc, '{"timeout": 30}', error=KlaviyoConfigError, transient_error=KlaviyoServerError
    )


def _parse_extra(conn: Connection, conn_id: str) -> dict[str, Any]:
    raw = conn.extra
    if not raw:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise KlaviyoConfigError(
            f"The extra of Airflow connection {conn_id!r} is not valid JSON ({exc.msg} at character "
            f'{exc.pos}); expected an object such as {{"timeout": 30}}'
        ) from None
    if not isinstance(extra, dict):
        raise KlaviyoConfigError(
            f"The extra of Airflow connection {conn_id!r} must be a JSON object, not {type(extra).__name__}"
        )
    return extra


def _parse_timeout(value: Any, default: tuple[float, float], conn_id: str) -> tuple[float, float]:
    if value is None:
        return default
    if isinstance(value, bool):
        value = "invalid"
    if isinstance(value, int | float) and value > 0:
        return float(value), float(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return float(value[0]), float(value[1])
    raise KlaviyoConfigError(
        f"Connection {conn_id!r}: extra 'timeout' must be a positive number of seconds or "
        "[connect, read]; a call without a timeout can hang a worker"
    )


def connection_settings(
    conn: Connection, conn_id: str, *, default_timeout: tuple[float, float]
) -> KlaviyoConnectionSettings:
    """Validate a Klaviyo connection and return what the hook needs from it.

    Extras are read by name and never copied into headers: ``timeout``, ``proxies`` and ``verify``
    become requests options, ``revision`` may only repeat the pinned revision, and keys meant for
    operators (list names and the like) are left to them.

    :param conn: the Airflow connection.
    :param conn_id: its id, for error messages.
    :param default_timeout: ``(connect, read)`` seconds when the extra sets none.
    """
    extra = _parse_extra(conn, conn_id)

    revision = extra.get("revision")
    if revision not in (None, "", KlaviyoHook.REVISION):
        raise KlaviyoConfigError(
            f"Connection {conn_id!r} asks for Klaviyo revision {revision!r}, but this provider is written "
            f"for revision {KlaviyoHook.REVISION!r} and pins it; remove 'revision' from the extra"
        )

    base_url = resolve_base_url(conn.host, DEFAULT_BASE_URL, conn_id, error=KlaviyoConfigError)
    hostname = urlsplit(base_url).hostname

    api_key = (conn.password or "").strip()
    if not api_key:
        raise KlaviyoConfigError(
            f"Connection {conn_id!r} has no private API key: put it in the password field"
        )
    refuse_unsendable_secret(api_key, conn_id, "the password field", error=KlaviyoConfigError)

    proxies = extra.get("proxies", extra.get("proxy")) or {}
    if not isinstance(proxies, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in proxies.items()
    ):
        raise KlaviyoConfigError(
            f"Connection {conn_id!r}: extra 'proxies' must map schemes to proxy URLs, "
            'e.g. {"https": "http://proxy.example.com:3128"}'
        )

    verify = tls_verify_setting(extra, hostname, conn_id, error=KlaviyoConfigError)

    return KlaviyoConnectionSettings(
        base_url=base_url,
        api_key=api_key,
        timeout=_parse_timeout(extra.get("timeout"), default_timeout, conn_id),
        proxies=dict(proxies),
        verify=verify,
    )


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _first_error(document: Any) -> dict[str, Any]:
    if isinstance(document, dict) and isinstance(document.get("errors"), list) and document["errors"]:
        first = document["errors"][0]
        return first if isinstance(first, dict) else {}
    return {}


def _pointers(document: Any) -> list[str]:
    errors = document.get("errors") if isinstance(document, dict) else None
    pointers = []
    for error in errors if isinstance(errors, list) else []:
        source = error.get("source") if isinstance(error, dict) else None
        if isinstance(source, dict) and isinstance(source.get("pointer"), str):
            pointers.append(source["pointer"])
    return pointers


def _errors(document: Any) -> list[dict[str, str | None]]:
    errors = document.get("errors") if isinstance(document, dict) else None
    summaries = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        source = error.get("source")
        pointer = source.get("pointer") if isinstance(source, dict) else None
        summaries.append(
            {
                "code": error.get("code") if isinstance(error.get("code"), str) else None,
                "detail": _error_text(error),
                "pointer": pointer if isinstance(pointer, str) else None,
            }
        )
    return summaries


def _error_text(error: Mapping[str, Any]) -> str:
    return str(error.get("detail") or error.get("title") or "no detail given")


def _filter_values(values: Sequence[str]) -> str:
    # Klaviyo's filter strings take double-quoted values, with a backslash before a quote or a backslash; other
    # characters are sent as they are (URI-encoded by requests), never as \uXXXX escapes, which it does not document.
    return ",".join(json.dumps(value, ensure_ascii=False) for value in values)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class KlaviyoHook(HttpHook):
    """Talk to Klaviyo's REST API with a private key, at the revision this provider is written for.

    The connection holds the private API key in its password; its host may override the base URL
    (``https://a.klaviyo.com``; a host without scheme means https, plain http is refused except for
    loopback hosts such as the local sandbox). Extras ``timeout``, ``proxies`` and ``verify`` are
    applied as requests options; nothing from the extra is sent as a header.

    Every call is paced to its endpoint's rate-limit tier (see :mod:`.pacing`) and retried by the
    shared policy (see :mod:`.retry`). Request URLs and Klaviyo's error details are masked before
    they are logged or raised, because both can hold addresses.

    .. code-block:: python

        hook = KlaviyoHook(concurrency=3)
        list_id = hook.find_list_by_name("Nosto Customers") or hook.create_list("Nosto Customers")

    :param klaviyo_conn_id: the Airflow connection of type ``klaviyo``.
    :param concurrency: how many tasks may call this Klaviyo account at once (the slots of the pool
        the tasks run in); each task paces itself to ``1/concurrency`` of every endpoint's limit.
    :param max_retry_wait: the longest ``Retry-After`` slept through, in seconds; a longer one raises
        :class:`~airflow_provider_klaviyo_nosto.exceptions.KlaviyoRateLimitError` at once.
    :param max_attempts: attempts per call, the first included.
    :param timeout: ``(connect, read)`` timeouts in seconds, unless the connection's extra sets one.
    """

    conn_name_attr = "klaviyo_conn_id"
    default_conn_name = "klaviyo_default"
    conn_type = "klaviyo"
    hook_name = "Klaviyo"

    #: The API revision every request body here is written for. Changing it is a code change, made
    #: together with the payloads, never a connection setting.
    REVISION = "2026-07-15"
    #: How many times a bulk import refused for some of its profiles is resent without them.
    MAX_REFUSAL_ROUNDS = 10

    def __init__(
        self,
        klaviyo_conn_id: str = default_conn_name,
        *,
        concurrency: int = 1,
        max_retry_wait: float = 60.0,
        max_attempts: int = 6,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        super().__init__(method="GET", http_conn_id=klaviyo_conn_id)
        self.klaviyo_conn_id = klaviyo_conn_id
        self.default_timeout = timeout
        self.pacer = KlaviyoPacer(concurrency)
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts,
            max_retry_wait=max_retry_wait,
            ceiling_error=self._rate_limit_ceiling_error,
        )
        self._settings: KlaviyoConnectionSettings | None = None
        self._session: requests.Session | None = None
        #: HTTP requests sent by this hook, retries included, for the run report.
        self.calls_made = 0
        #: Of those, how many Klaviyo answered with 429: pacing should keep this at or near zero.
        self.throttled = 0

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form layout (read by Airflow 3.1; 3.2+ reads the provider info)."""
        return {
            "hidden_fields": ["login", "schema", "port"],
            "relabeling": {"password": "Private API key", "host": "API base URL"},
            "placeholders": {
                "host": DEFAULT_BASE_URL,
                "password": "pk_...",
                "extra": '{"timeout": 60, "proxies": {"https": "http://proxy.example.com:3128"}}',
            },
        }

    # -- connection and transport -------------------------------------------------------------

    def _rate_limit_ceiling_error(
        self, exc: BaseException | None, retry_after: float, ceiling: float
    ) -> BaseException:
        return KlaviyoRateLimitError(
            f"Klaviyo throttled the call and asked to wait {retry_after:.0f} s, longer than the "
            f"{ceiling:.0f} s this hook sleeps through (max_retry_wait); a daily limit may be used up. "
            + CEILING_ADVICE,
            retry_after=retry_after,
            code=getattr(exc, "code", None),
        )

    @property
    def settings(self) -> KlaviyoConnectionSettings:
        """The validated connection settings, read once per hook."""
        if self._settings is None:
            try:
                conn = self.get_connection(self.klaviyo_conn_id)
            except AirflowNotFoundException:
                raise
            except Exception as exc:
                raise _unreadable_connection(self.klaviyo_conn_id, exc) from None
            self._settings = connection_settings(
                conn, self.klaviyo_conn_id, default_timeout=self.default_timeout
            )
        return self._settings

    async def asettings(self) -> KlaviyoConnectionSettings:
        """The connection settings, looked up without blocking the event loop (triggerer-safe)."""
        if self._settings is None:
            try:
                conn = await get_async_connection(self.klaviyo_conn_id, hook=self)
            except AirflowNotFoundException:
                raise
            except Exception as exc:
                raise _unreadable_connection(self.klaviyo_conn_id, exc) from None
            self._settings = connection_settings(
                conn, self.klaviyo_conn_id, default_timeout=self.default_timeout
            )
        return self._settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """Return the hook's session, authenticated once, with exactly Klaviyo's headers.

        Unlike ``HttpHook.get_conn`` this copies nothing from the connection's extra into headers.

        :param headers: additional headers; none are needed for Klaviyo.
        :param extra_options: not supported: options come from the connection's extra.
        """
        if extra_options:
            raise ValueError("KlaviyoHook takes its request options from the connection's extra")
        if self._session is None:
            settings = self.settings
            session = requests.Session()
            session.headers = CaseInsensitiveDict(settings.headers())
            self.base_url = settings.base_url
            self._base_url_initialized = True
            self._session = self._configure_session_from_mount_adapters(session)
        if headers:
            self._session.headers.update(headers)
        return self._session

    def _url(self, path: str) -> str:
        base = self.settings.base_url
        if "://" in path:
            if _origin(path) != _origin(base):
                raise KlaviyoConfigError(
                    f"Refusing to send the Klaviyo key to {_origin(path)}; the connection points at {_origin(base)}"
                )
            return path
        if not path.startswith("/"):
            raise ValueError(f"Klaviyo paths start with '/', got {path!r}")
        return f"{base}{path}"

    def _before_sleep(self, operation: str) -> Any:
        def log_retry(retry_state: tenacity.RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
            self.log.warning(
                "Klaviyo %s failed (%s); attempt %d of %d, retrying in %.1f s",
                operation,
                _describe(exc),
                retry_state.attempt_number,
                self.retry_policy.max_attempts,
                wait,
            )

        return log_retry

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any] | None:
        """Send one JSON:API request, paced and retried, and return the parsed body.

        :param method: the HTTP method.
        :param path: a path under the base URL (``/api/lists``, no trailing slash) or a full URL on
            the same host (a ``links.next``).
        :param params: query parameters.
        :param json: the request document.
        :param idempotent: whether repeating the call cannot change the outcome; defaults to true for
            every method except POST. Decides whether outcome-unknown faults (500/502/504, read
            timeouts) are retried.
        :return: the parsed body, or ``None`` for 204 No Content.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        url = self._url(path)
        key = endpoint_template(method, url)
        operation = f"{method} {key[1]}"
        data = None if json is None else _dumps(json)
        session = self.get_conn()
        settings = self.settings

        def attempt() -> dict[str, Any] | None:
            self.pacer.wait(method, url)
            self.calls_made += 1
            self.log.debug("Klaviyo %s %s params=%s", method, redact(url), redact(str(params or {})))
            response = session.request(
                method,
                url,
                params=params,
                data=data,
                timeout=settings.timeout,
                proxies=settings.proxies or None,
                verify=settings.verify,
            )
            self.pacer.observe(method, url, response.headers)
            return self._interpret(
                operation, key, response.status_code, response.headers, response.content, idempotent
            )

        retrying = self.retry_policy.retrying(
            idempotent=idempotent, before_sleep=self._before_sleep(operation)
        )
        try:
            return retrying(attempt)
        except requests.RequestException as exc:
            # The transport error's text holds the URL (and so any filtered address): mask it and
            # drop the chained original, whose traceback would print it unmasked.
            if certificate_refused(exc):
                raise self._untrusted_certificate(operation, exc) from None
            raise KlaviyoServerError(
                f"Klaviyo {operation} could not be completed: {_describe(exc)}. {RETRY_HINT}", retryable=False
            ) from None

    def _untrusted_certificate(self, operation: str, exc: BaseException) -> Exception:
        return untrusted_certificate(
            f"Klaviyo {operation}", _describe(exc), self.klaviyo_conn_id, error=KlaviyoConfigError
        )

    def _interpret(
        self,
        operation: str,
        key: tuple[str, str],
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        idempotent: bool,
    ) -> dict[str, Any] | None:
        """Turn a response into its parsed body or the exception that describes it.

        Shared by the sync and async paths so that both classify every status the same way.
        """
        if status == 204:
            return None
        document = _json_or_none(body)
        if 200 <= status < 300:
            if isinstance(document, dict):
                return document
            raise KlaviyoServerError(
                f"Klaviyo answered {operation} with {status} but a body that is not a JSON document "
                f"({len(body)} bytes, possibly truncated). {RETRY_HINT}",
                status=status,
                # A read can be repeated; a create may have happened, so it must not be.
                retryable=idempotent,
            )

        error = _first_error(document)
        code = error.get("code") if isinstance(error.get("code"), str) else None
        meta = error.get("meta") if isinstance(error.get("meta"), dict) else None
        content_type = headers.get("content-type", "unknown content type")

        if status == 401:
            raise KlaviyoAuthError(self.klaviyo_conn_id, code=code)
        if status == 403 and document is None:
            if headers.get("cf-mitigated"):
                raise KlaviyoServerError(
                    f"Klaviyo's edge (Cloudflare) challenged {operation} (403, cf-mitigated); the request "
                    "never reached the API and is retried",
                    status=403,
                    retryable=True,
                )
            raise KlaviyoClientError(
                f"{operation} was refused with 403 and a non-JSON body ({content_type}): not Klaviyo's API "
                "answering, probably a proxy or firewall in between. Check the proxy ('proxies' in the extra of "
                f"Airflow connection {self.klaviyo_conn_id!r}) or ask your network admins to let the workers "
                "reach the Klaviyo API host",
                status=403,
            )
        if status == 403:
            raise KlaviyoPermissionError(
                self.klaviyo_conn_id, operation, REQUIRED_SCOPES.get(key, ()), code=code
            )
        if status == 429:
            self.throttled += 1
            retry_after = parse_retry_after(headers.get("Retry-After"))
            wait = f"{retry_after:.0f} s" if retry_after is not None else "an unspecified time"
            raise KlaviyoRateLimitError(
                f"Klaviyo throttled {operation} (429) and asked to wait {wait}",
                retry_after=retry_after,
                code=code,
            )
        if status >= 500:
            detail = _error_text(error) if error else f"non-JSON body ({content_type})"
            raise KlaviyoServerError(
                f"Klaviyo failed {operation} with {status}: {detail.rstrip('.')}. {RETRY_HINT}",
                status=status,
                code=code,
                meta=meta,
                # A 503 may say when to come back; that is honoured like a 429's.
                retry_after=parse_retry_after(headers.get("Retry-After")),
            )
        if document is None:
            raise KlaviyoClientError(
                f"Klaviyo refused {operation} with {status} and a non-JSON body ({content_type})",
                status=status,
            )
        details = "; ".join(_error_text(e) for e in document.get("errors", []) if isinstance(e, dict))
        raise KlaviyoClientError(
            f"Klaviyo refused {operation} with {status} {code or ''}: {details or 'no detail given'}",
            status=status,
            code=code,
            pointers=_pointers(document),
            meta=meta,
            errors=_errors(document),
        )

    # -- pagination ---------------------------------------------------------------------------

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield every item of ``data`` across all pages, following ``links.next`` verbatim.

        Klaviyo's cursors are opaque, so the ``next`` link is requested exactly as received, never
        rebuilt. A cursor seen before (A, B, A included) raises instead of looping for ever.

        :param path: the collection path, e.g. ``/api/lists/Y6nRLr/relationships/profiles``.
        :param params: query parameters of the first page; ``page[size]`` must be within the cap.
        """
        params = dict(params or {})
        self._check_page_size(path, params)
        base_origin = _origin(self.settings.base_url)
        seen: set[str] = set()
        url: str = path
        page_params: Mapping[str, Any] | None = params
        pages = 0
        while True:
            document = self.request("GET", url, params=page_params) or {}
            pages += 1
            items = document.get("data") or []
            if isinstance(items, dict):
                items = [items]
            yield from items

            next_url = (document.get("links") or {}).get("next")
            if not next_url:
                return
            if _origin(next_url) != base_origin:
                raise KlaviyoPaginationError(
                    f"Klaviyo's next-page link for {path} points at another host ({_origin(next_url)}); "
                    "not following it with the API key"
                )
            cursor = _cursor_of(next_url)
            if cursor in seen:
                raise KlaviyoPaginationError(
                    f"Pagination cursor repeated on {path} after {pages} pages; stopping instead of "
                    "looping over the same pages"
                )
            seen.add(cursor)
            url, page_params = next_url, None

    @staticmethod
    def _check_page_size(path: str, params: Mapping[str, Any]) -> None:
        size = params.get("page[size]")
        if size is None:
            return
        cap = PAGE_SIZE_CAPS.get(endpoint_template("GET", path)[1], PAGE_SIZE)
        if not 1 <= int(size) <= cap:
            raise ValueError(f"page[size] for {path} must be between 1 and {cap}, got {size}")

    # -- connection test ----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with ``GET /api/accounts`` (cheap, needs only ``accounts:read``)."""
        # The UI tests a form under a made-up connection id, so these messages name the form's fields instead.
        try:
            with single_attempt(self):
                document = self.request("GET", "/api/accounts") or {}
        except KlaviyoAuthError:
            return False, (
                "Klaviyo did not accept the key (401): put the account's private API key (pk_...) in the "
                "Password field, not the public site id."
            )
        except KlaviyoPermissionError:
            return False, (
                "Klaviyo accepted the key but it lacks the scope accounts:read, which the test needs; the sync "
                "also needs the scopes listed in the docs (Klaviyo: Settings > API keys)."
            )
        except Exception as exc:
            return False, redact(str(exc)).removesuffix(RETRY_HINT).removesuffix(CEILING_ADVICE).rstrip()
        accounts = document.get("data") or []
        account_id = accounts[0].get("id") if accounts and isinstance(accounts[0], dict) else "unknown"
        return True, f"Connected to Klaviyo account {account_id} (revision {self.REVISION})"

    # -- lists --------------------------------------------------------------------------------

    def find_list_by_name(self, name: str) -> str | None:
        """Return the id of the list called exactly ``name``, or ``None`` when there is none.

        Klaviyo does not keep list names unique, so two lists with the name are a conflict for a
        person to settle, not something to guess at.

        :param name: the list name.
        :raises KlaviyoError: when more than one list has the name.
        """
        ids = self.find_lists_by_name(name)
        if len(ids) > 1:
            raise KlaviyoError(
                f"{len(ids)} Klaviyo lists are named {name!r} (ids {', '.join(ids)}), so the sync cannot tell "
                "which one is its own. Rename or delete the others in Klaviyo, or choose another name in the "
                "sync configuration."
            )
        return ids[0] if ids else None

    def find_lists_by_name(self, name: str) -> list[str]:
        """Return the ids of every list called exactly ``name`` (Klaviyo allows several).

        :param name: the list name.
        """
        params = {
            "filter": f"equals(name,{_filter_values([name])})",
            "fields[list]": "name",
            "page[size]": LIST_PAGE_SIZE,
        }
        return [item["id"] for item in self.paginate("/api/lists", params) if _attr(item, "name") == name]

    def get_list(self, list_id: str) -> dict[str, Any] | None:
        """Return the list resource (``data``), or ``None`` when Klaviyo has no such list.

        :param list_id: the Klaviyo list id.
        """
        return self._get_resource(f"/api/lists/{_segment(list_id)}")

    def _get_resource(self, path: str) -> dict[str, Any] | None:
        """GET one list or segment: its ``data``, or ``None`` on a 404."""
        try:
            document = self.request("GET", path) or {}
        except KlaviyoClientError as exc:
            if exc.status == 404:
                return None
            raise
        return document.get("data")

    def create_list(self, name: str) -> str:
        """Create a list and return its id. Not retried on outcome-unknown faults: Klaviyo would
        make a second list with the same name.

        :param name: the list name.
        """
        document = self.request(
            "POST",
            "/api/lists",
            json={"data": {"type": "list", "attributes": {"name": name}}},
            idempotent=False,
        )
        list_id = str(((document or {}).get("data") or {}).get("id") or "")
        if not list_id:
            raise KlaviyoServerError("Klaviyo created the list but its answer carried no list id")
        self.log.info("Created Klaviyo list %s", list_id)
        return list_id

    def rename_list(self, list_id: str, name: str) -> None:
        """Give a list another name; its id, members and the flows and segments built on it stay.

        :param list_id: the Klaviyo list id.
        :param name: the new name.
        """
        body = {"data": {"type": "list", "id": list_id, "attributes": {"name": name}}}
        self.request("PATCH", f"/api/lists/{_segment(list_id)}", json=body, idempotent=True)

    def iter_list_profiles(self, list_id: str, property_name: str) -> Iterator[tuple[str, Any]]:
        """Yield ``(email, value of the property)`` for every member of a list, as Klaviyo stores them.

        One pass over the list's members reads both, 100 per call; the value is ``None`` when a member
        lacks the property. Used by a full resync to compare with what Klaviyo really holds.

        :param list_id: the Klaviyo list id.
        :param property_name: the custom property to read.
        """
        path = f"/api/lists/{_segment(list_id)}/profiles"
        for profile in self.paginate(path, {"fields[profile]": "email,properties", "page[size]": PAGE_SIZE}):
            email = _attr(profile, "email")
            if isinstance(email, str):
                yield email, (_attr(profile, "properties") or {}).get(property_name)

    def iter_list_profile_ids(self, list_id: str) -> Iterator[str]:
        """Yield the profile id of every member of a list.

        :param list_id: the Klaviyo list id.
        """
        path = f"/api/lists/{_segment(list_id)}/relationships/profiles"
        for item in self.paginate(path, {"page[size]": PAGE_SIZE}):
            yield item["id"]

    def add_profiles_to_list(self, list_id: str, profile_ids: Iterable[str]) -> None:
        """Add profiles to a list, 1,000 per call (Klaviyo's cap). Membership changes nothing about
        consent, and adding a member twice is harmless, so every chunk is retried like a read.

        :param list_id: the Klaviyo list id.
        :param profile_ids: Klaviyo profile ids.
        """
        self._change_membership("POST", list_id, profile_ids)

    def remove_profiles_from_list(self, list_id: str, profile_ids: Iterable[str]) -> None:
        """Remove profiles from a list, 1,000 per call; the profiles themselves are kept.

        :param list_id: the Klaviyo list id.
        :param profile_ids: Klaviyo profile ids.
        """
        self._change_membership("DELETE", list_id, profile_ids)

    def _change_membership(self, method: str, list_id: str, profile_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(profile_ids))
        path = f"/api/lists/{_segment(list_id)}/relationships/profiles"
        done = 0
        for chunk in _chunks(ids, LIST_MEMBERSHIP_CHUNK):
            body = {"data": [{"type": "profile", "id": profile_id} for profile_id in chunk]}
            self.request(method, path, json=body, idempotent=True)
            done += len(chunk)
            self.log.info(
                "%s %d of %d profiles %s list %s",
                "Added" if method == "POST" else "Removed",
                done,
                len(ids),
                "to" if method == "POST" else "from",
                list_id,
            )

    def get_list_flow_triggers(self, list_id: str) -> list[dict[str, Any]]:
        """Return the flows a list triggers (``id``, ``name``, ``status``); needs ``flows:read``.

        :param list_id: the Klaviyo list id.
        """
        return self._flow_triggers(f"/api/lists/{_segment(list_id)}/flow-triggers")

    def _flow_triggers(self, path: str) -> list[dict[str, Any]]:
        """The flows at a list's or segment's ``flow-triggers`` path, as ``id``, ``name``, ``status``."""
        flows = []
        for item in self.paginate(path, {"fields[flow]": "name,status,trigger_type"}):
            attributes = item.get("attributes") or {}
            flows.append(
                {"id": item.get("id"), "name": attributes.get("name"), "status": attributes.get("status")}
            )
        return flows

    # -- segments -----------------------------------------------------------------------------

    def find_segment_by_name(self, name: str) -> str | None:
        """Return the id of the Klaviyo segment called exactly ``name``, or ``None`` when there is none.

        :param name: the segment name.
        :raises KlaviyoConfigError: when more than one segment has the name (Klaviyo does not keep them unique):
            a person has to settle which one is the sync's, so the task is not retried.
        """
        params = {
            "filter": f"equals(name,{_filter_values([name])})",
            "fields[segment]": "name",
            "page[size]": LIST_PAGE_SIZE,
        }
        ids = [item["id"] for item in self.paginate("/api/segments", params) if _attr(item, "name") == name]
        if len(ids) > 1:
            raise KlaviyoConfigError(
                f"{len(ids)} Klaviyo segments are named {name!r} (ids {', '.join(ids)}): delete or rename all "
                "but one of them, so that the sync knows which one is its own."
            )
        return ids[0] if ids else None

    def get_segment(self, segment_id: str) -> dict[str, Any] | None:
        """Return the segment resource (``data``, with its definition), or ``None`` when it does not exist.

        :param segment_id: the Klaviyo segment id.
        """
        return self._get_resource(f"/api/segments/{_segment(segment_id)}")

    def create_segment(self, name: str, definition: Mapping[str, Any]) -> str:
        """Create a segment and return its id. Not retried on outcome-unknown faults: Klaviyo would make a
        second segment with the same name. Klaviyo allows 100 creates a day per account.

        :param name: the segment name.
        :param definition: the segment's ``definition`` (``{"condition_groups": [...]}``).
        """
        body = {"data": {"type": "segment", "attributes": {"name": name, "definition": dict(definition)}}}
        document = self.request("POST", "/api/segments", json=body, idempotent=False)
        segment_id = str(((document or {}).get("data") or {}).get("id") or "")
        if not segment_id:
            raise KlaviyoServerError("Klaviyo created the segment but its answer carried no segment id")
        return segment_id

    def update_segment(self, segment_id: str, name: str, definition: Mapping[str, Any]) -> None:
        """Replace a segment's name and definition (setting them twice gives the same segment).

        :param segment_id: the Klaviyo segment id.
        :param name: the new name.
        :param definition: the new definition.
        """
        body = {
            "data": {
                "type": "segment",
                "id": segment_id,
                "attributes": {"name": name, "definition": dict(definition)},
            }
        }
        self.request("PATCH", f"/api/segments/{_segment(segment_id)}", json=body, idempotent=True)

    def get_segment_flow_triggers(self, segment_id: str) -> list[dict[str, Any]]:
        """Return the flows a segment triggers (``id``, ``name``, ``status``); needs ``flows:read``.

        :param segment_id: the Klaviyo segment id.
        """
        return self._flow_triggers(f"/api/segments/{_segment(segment_id)}/flow-triggers")

    # -- profiles -----------------------------------------------------------------------------

    def _iter_profiles_by_email(self, emails: Iterable[str], fields: str) -> Iterator[dict[str, Any]]:
        unique = list(dict.fromkeys(emails))
        for chunk in _chunks(unique, EMAIL_FILTER_CHUNK):
            params = {
                "filter": f"any(email,[{_filter_values(chunk)}])",
                "fields[profile]": fields,
                "page[size]": PAGE_SIZE,
            }
            yield from self.paginate("/api/profiles", params)

    def get_profile_ids_by_email(self, emails: Iterable[str]) -> dict[str, str]:
        """Return ``{email: profile id}`` for the addresses that have a Klaviyo profile.

        Looks up 100 addresses per call, the page size cap, so each lookup is one page. Klaviyo's
        spelling is matched case-insensitively to the caller's.

        :param emails: normalised addresses; those without a profile are left out of the result.
        """
        wanted = {email.lower(): email for email in emails}
        found: dict[str, str] = {}
        for profile in self._iter_profiles_by_email(wanted.values(), "email"):
            email = _attr(profile, "email")
            if isinstance(email, str) and email.lower() in wanted:
                found[wanted[email.lower()]] = profile["id"]
        return found

    def iter_profile_emails(self, updated_after: str | None = None) -> Iterator[str]:
        """Yield the email of every profile in the account, or of those updated after a moment.

        Used to find profiles whose stored email differs from its normalised form only in letter case:
        Klaviyo's filters match emails exactly, so such a profile cannot be found by looking up the
        normalised address.

        :param updated_after: an ISO 8601 timestamp; ``None`` scans every profile.
        """
        params: dict[str, Any] = {"fields[profile]": "email", "page[size]": PAGE_SIZE}
        if updated_after:
            params["filter"] = f"greater-than(updated,{updated_after})"
        for profile in self.paginate("/api/profiles", params):
            email = _attr(profile, "email")
            if isinstance(email, str):
                yield email

    def iter_profiles(self, emails: Iterable[str], property_name: str) -> Iterator[tuple[str, str, Any]]:
        """Yield ``(email, profile id, current value of the property)`` for a full resync.

        :param emails: normalised addresses; those without a profile are not yielded.
        :param property_name: the custom property to read (``None`` when a profile lacks it).
        """
        wanted = {email.lower(): email for email in emails}
        for profile in self._iter_profiles_by_email(wanted.values(), "email,properties"):
            email = _attr(profile, "email")
            if isinstance(email, str) and email.lower() in wanted:
                properties = _attr(profile, "properties") or {}
                yield wanted[email.lower()], profile["id"], properties.get(property_name)

    def unset_profile_property(self, profile_id: str, property_name: str) -> None:
        """Delete one custom property from a profile (``meta.patch_properties.unset``).

        One call per profile (tier L, 750/min for the whole account), so clearing many profiles
        this way is slow; writing an empty list through a bulk import is the fast default.

        :param profile_id: the Klaviyo profile id.
        :param property_name: the property to remove.
        """
        body = {
            "data": {
                "type": "profile",
                "id": profile_id,
                "attributes": {},
                "meta": {"patch_properties": {"unset": [property_name]}},
            }
        }
        self.request("PATCH", f"/api/profiles/{_segment(profile_id)}", json=body, idempotent=True)

    def resolve_duplicate_profile(self, email: str) -> str:
        """Return the id of the profile for ``email``, creating it when there is none.

        Klaviyo answers a create for a known address with 409 ``duplicate_profile`` and the existing
        id in ``errors[0].meta.duplicate_profile_id``; when that id is missing the profile is looked
        up by email. The POST is never retried on outcome-unknown faults (it could create twice).

        :param email: a normalised address (the only identifier sent, so the email-vs-phone
            conflict cannot happen).
        """
        body = {"data": {"type": "profile", "attributes": {"email": email}}}
        try:
            document = self.request("POST", "/api/profiles", json=body, idempotent=False) or {}
        except KlaviyoClientError as exc:
            if exc.status != 409:
                raise
            duplicate_id = exc.meta.get("duplicate_profile_id")
            if isinstance(duplicate_id, str) and duplicate_id:
                return duplicate_id
            found = self.get_profile_ids_by_email([email]).get(email)
            if found:
                return found
            raise KlaviyoError(
                f"Klaviyo reported a duplicate profile for {email} but neither named it nor finds it by email",
                status=409,
                code=exc.code,
            ) from None
        profile_id = (document.get("data") or {}).get("id")
        if not profile_id:
            raise KlaviyoServerError("Klaviyo created a profile but its answer carried no profile id")
        return str(profile_id)

    # -- bulk import --------------------------------------------------------------------------

    @staticmethod
    def _bulk_import_body(profiles: Sequence[dict[str, Any]], list_id: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": list(profiles)}},
        }
        if list_id is not None:
            data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
        return {"data": data}

    def submit_bulk_import(self, profiles: list[dict[str, Any]], list_id: str | None) -> BulkImportSubmission:
        """Start a bulk import job (up to 10,000 profiles, 5 MB) and return its id.

        Klaviyo validates the whole request: one bad profile makes it refuse all of them with a 400
        whose ``source.pointer`` names the profile's index. Those profiles are taken out and the rest
        sent again. A refusal may name only some of the bad profiles, so this repeats while each 400
        names profiles still in the batch, at most :attr:`MAX_REFUSAL_ROUNDS` times: every round sends
        fewer profiles, so it cannot loop. A 400 that names no profile (a bad list id) fails the whole
        batch. The POST is not repeated after a read timeout or 500/502/504: Klaviyo may have queued
        the job, and a second job would import the batch twice under an id the caller never learns,
        so its per-profile errors would never be read.

        :param profiles: JSON:API profile resources (``{"type": "profile", "attributes": {...}}``).
        :param list_id: the list every imported profile joins, or ``None`` for no list.
        :return: the job id and the refused profiles by index into ``profiles``, reasons masked.
        """
        if not profiles:
            raise ValueError("submit_bulk_import needs at least one profile")
        path = "/api/profile-bulk-import-jobs"
        kept = list(range(len(profiles)))
        rejected: dict[int, str] = {}
        for round_number in range(self.MAX_REFUSAL_ROUNDS + 1):
            try:
                document = self.request(
                    "POST",
                    path,
                    json=self._bulk_import_body([profiles[i] for i in kept], list_id),
                    idempotent=False,
                )
                return BulkImportSubmission(job_id=_job_id(document), rejected=rejected)
            except KlaviyoClientError as exc:
                named = _rejected_profiles(exc) if exc.status == 400 else None
                if not named or round_number == self.MAX_REFUSAL_ROUNDS:
                    if not rejected:
                        raise
                    # Point back into the caller's list, not the shortened one.
                    raise KlaviyoClientError(
                        f"Klaviyo refused the bulk import again after {len(rejected)} refused profiles were "
                        f"removed: {exc}",
                        status=exc.status,
                        code=exc.code,
                        pointers=[_remap_pointer(p, kept) for p in exc.pointers],
                    ) from None
            if any(index >= len(kept) for index in named):
                raise KlaviyoClientError(
                    "Klaviyo refused the bulk import naming profiles that were not sent", status=400
                )
            rejected.update({kept[index]: reason for index, reason in named.items()})
            kept = [original for index, original in enumerate(kept) if index not in named]
            self.log.warning(
                "Klaviyo refused %d of %d profiles in a bulk import; sending the other %d again",
                len(named),
                len(named) + len(kept),
                len(kept),
            )
            if not kept:
                break
        return BulkImportSubmission(job_id=None, rejected=rejected)

    def get_bulk_import_job(self, job_id: str) -> BulkImportJob:
        """Return a bulk import job's status and counts.

        :param job_id: the job id returned by :meth:`submit_bulk_import`; must not be empty.
        """
        path = _bulk_job_path(job_id)
        return _parse_bulk_import_job(self.request("GET", path), job_id)

    async def aget_bulk_import_job(self, job_id: str) -> BulkImportJob:
        """Asynchronous :meth:`get_bulk_import_job` for triggers: aiohttp, same headers, same retries.

        The connection is looked up through common-compat's ``get_async_connection``, because a
        synchronous lookup inside the triggerer's event loop can deadlock on secret masking.

        :param job_id: the job id; must not be empty.
        """
        path = _bulk_job_path(job_id)
        settings = await self.asettings()
        url = f"{settings.base_url}{path}"
        key = endpoint_template("GET", url)
        operation = f"GET {key[1]}"
        proxy = settings.proxies.get(urlsplit(url).scheme) or None
        ssl_option: bool | ssl.SSLContext = True
        if isinstance(settings.verify, str):
            ssl_option = ca_context(settings.verify)
        elif settings.verify is False:
            ssl_option = False
        client_timeout = aiohttp.ClientTimeout(
            sock_connect=settings.timeout[0], sock_read=settings.timeout[1]
        )

        async with aiohttp.ClientSession(headers=settings.headers(), timeout=client_timeout) as session:

            async def attempt() -> dict[str, Any] | None:
                self.log.debug("Klaviyo GET %s", redact(url))
                self.calls_made += 1
                async with session.get(url, proxy=proxy, ssl=ssl_option) as response:
                    body = await response.read()
                    return self._interpret(operation, key, response.status, response.headers, body, True)

            retrying = self.retry_policy.async_retrying(
                idempotent=True, before_sleep=self._before_sleep(operation)
            )
            try:
                document: dict[str, Any] | None = await retrying(attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if certificate_refused(exc):
                    raise self._untrusted_certificate(operation, exc) from None
                raise KlaviyoServerError(
                    f"Klaviyo {operation} could not be completed: {_describe(exc)}. {RETRY_HINT}",
                    retryable=False,
                ) from None
        return _parse_bulk_import_job(document, job_id)

    def iter_bulk_import_errors(self, job_id: str) -> Iterator[BulkImportError]:
        """Yield the profiles a finished job could not import, with Klaviyo's reasons.

        :param job_id: the job id; must not be empty.
        """
        path = f"{_bulk_job_path(job_id)}/import-errors"
        for item in self.paginate(path, {"page[size]": PAGE_SIZE}):
            attributes = item.get("attributes") or {}
            payload = attributes.get("original_payload") or {}
            email = (payload.get("attributes") or {}).get("email") if isinstance(payload, dict) else None
            source = attributes.get("source") or {}
            pointer = source.get("pointer") if isinstance(source, dict) else None
            yield BulkImportError(
                email=email if isinstance(email, str) else None,
                code=attributes.get("code"),
                detail=redact(str(attributes.get("detail") or attributes.get("title") or "")),
                pointer=redact(pointer) if isinstance(pointer, str) else None,
            )

    def with_retry_policy(self, **changes: Any) -> KlaviyoHook:
        """Replace fields of the retry policy (e.g. an injected ``sleep``) and return the hook."""
        self.retry_policy = replace(self.retry_policy, **changes)
        return self


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _cursor_of(next_url: str) -> str:
    cursors = parse_qs(urlsplit(next_url).query).get("page[cursor]")
    return cursors[0] if cursors else next_url


def _segment(value: str) -> str:
    if not value:
        raise ValueError("An empty Klaviyo id would address the collection instead of one resource")
    return quote(value, safe="")


def _bulk_job_path(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"A bulk import job id is required, got {job_id!r}")
    return f"/api/profile-bulk-import-jobs/{_segment(job_id.strip())}"


def _attr(resource: Mapping[str, Any], name: str) -> Any:
    attributes = resource.get("attributes")
    return attributes.get(name) if isinstance(attributes, dict) else None


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no exception"
    return redact(f"{type(exc).__name__}: {exc}")[:500]


def _job_id(document: dict[str, Any] | None) -> str:
    job_id = ((document or {}).get("data") or {}).get("id")
    if not isinstance(job_id, str) or not job_id:
        raise KlaviyoServerError("Klaviyo accepted the bulk import but its answer carried no job id")
    return job_id


def _rejected_profiles(exc: KlaviyoClientError) -> dict[int, str] | None:
    """Map a 400's errors to profile indexes and reasons, or ``None`` if any error is not about a profile."""
    if not exc.errors:
        return None
    rejected: dict[int, str] = {}
    for error in exc.errors:
        match = _PROFILE_POINTER.match(error.get("pointer") or "")
        if match is None:
            return None
        index = int(match.group(1))
        reason = f"{error.get('code') or 'invalid'}: {error.get('detail') or 'no detail given'}"
        rejected[index] = f"{rejected[index]}; {reason}" if index in rejected else reason
    return rejected


def _remap_pointer(pointer: str, kept: Sequence[int]) -> str:
    match = _PROFILE_POINTER.match(pointer)
    if match is None or int(match.group(1)) >= len(kept):
        return pointer
    return pointer.replace(f"/data/{match.group(1)}", f"/data/{kept[int(match.group(1))]}", 1)


def _parse_bulk_import_job(document: dict[str, Any] | None, job_id: str) -> BulkImportJob:
    data = (document or {}).get("data")
    if not isinstance(data, dict):
        raise KlaviyoServerError(f"Klaviyo's answer for bulk import job {job_id} has no job resource")
    attributes = data.get("attributes") or {}
    raw_status = attributes.get("status")
    try:
        status = BulkImportJobStatus(str(raw_status))
    except ValueError:
        raise KlaviyoError(
            f"Bulk import job {job_id} has status {raw_status!r}, which revision {KlaviyoHook.REVISION} does "
            f"not define (expected one of {', '.join(s.value for s in BulkImportJobStatus)})"
        ) from None
    return BulkImportJob(
        id=str(data.get("id") or job_id),
        status=status,
        total_count=int(attributes.get("total_count") or 0),
        completed_count=int(attributes.get("completed_count") or 0),
        failed_count=int(attributes.get("failed_count") or 0),
    )
