"""Exceptions raised by the Klaviyo and Nosto hooks.

Every message is passed through :func:`~airflow_provider_klaviyo_nosto.sync.masking.redact` when the
exception is built, because Klaviyo quotes addresses in its error details and request URLs carry them
in ``filter=`` clauses: whatever ends up in a task log or the UI must not show an email or a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_klaviyo_nosto.sync.masking import redact


class KlaviyoError(AirflowException):
    """A Klaviyo call failed.

    :param message: what went wrong; masked before it is stored.
    :param status: the HTTP status Klaviyo answered with, if there was an answer.
    :param code: Klaviyo's machine-readable error code (``errors[0].code``), if any.
    :param pointers: the JSON:API ``source.pointer`` of every error in the answer, e.g.
        ``/data/attributes/profiles/data/3/attributes/email``.
    :param retryable: overrides the status-based retry rule: ``True`` for faults that are known to be
        transient whatever the status says (a Cloudflare challenge page), ``False`` for faults that must
        not be repeated, ``None`` to let :func:`~airflow_provider_klaviyo_nosto.hooks.retry.is_retryable`
        decide from the status.
    :param meta: the ``meta`` object of the first error (e.g. ``duplicate_profile_id`` on a 409).
    :param errors: every error of the answer as ``{"code", "detail", "pointer"}``, masked.
    :param retry_after: the wait the server asked for (``Retry-After``), in seconds, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        pointers: Iterable[str] = (),
        retryable: bool | None = None,
        meta: dict[str, Any] | None = None,
        errors: Iterable[Mapping[str, str | None]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.status = status
        self.code = code
        self.pointers: list[str] = [redact(pointer) for pointer in pointers]
        self.retryable = retryable
        self.meta: dict[str, Any] = meta or {}
        self.errors: list[dict[str, str | None]] = [
            {key: redact(value) if isinstance(value, str) else None for key, value in error.items()}
            for error in errors
        ]
        self.retry_after = retry_after


class KlaviyoAuthError(KlaviyoError, AirflowFailException):
    """Klaviyo refused the private key (401). Airflow does not retry the task: the key must be fixed first."""

    def __init__(self, conn_id: str, *, code: str | None = None) -> None:
        super().__init__(
            f"Klaviyo did not accept the credentials (401{', ' + code if code else ''}). Check the private "
            f"API key in the password of Airflow connection {conn_id!r}; it must be a private key (pk_...) "
            "of the account, not the public site id.",
            status=401,
            code=code,
            retryable=False,
        )


class KlaviyoPermissionError(KlaviyoError, AirflowFailException):
    """The private key lacks a scope the operation needs (403). Airflow does not retry the task."""

    def __init__(
        self, conn_id: str, operation: str, scopes: Iterable[str], *, code: str | None = None
    ) -> None:
        self.scopes = sorted(scopes)
        needed = ", ".join(self.scopes) if self.scopes else "(no scope table entry for this call)"
        super().__init__(
            f"Klaviyo refused {operation} (403): the private API key in Airflow connection {conn_id!r} "
            f"lacks a scope. The call needs: {needed}. Edit the key under Settings > API keys in Klaviyo.",
            status=403,
            code=code,
            retryable=False,
        )


class KlaviyoRateLimitError(KlaviyoError):
    """Klaviyo throttled a call (429).

    Raised to the caller only when the ``Retry-After`` wait exceeds the hook's ceiling, or when every
    attempt was throttled: sleeping for hours inside a worker slot would be worse than failing the try
    and letting Airflow retry the task later.

    :param retry_after: the wait Klaviyo asked for, in seconds, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, status=429, code=code, retry_after=retry_after, retryable=retryable)


class KlaviyoClientError(KlaviyoError, AirflowFailException):
    """Klaviyo rejected a request as invalid (4xx other than 401, 403 and 429); never retried, by the hook or
    by Airflow: the same request gets the same answer, and each try burns rate-limit quota."""


class KlaviyoServerError(KlaviyoError):
    """Klaviyo or the network between failed (5xx, unreadable body, connection fault, edge challenge)."""


class KlaviyoPaginationError(KlaviyoError):
    """Cursor pagination went wrong: a repeated cursor or a ``next`` link to another host."""


class KlaviyoConfigError(KlaviyoError, AirflowFailException):
    """The Airflow connection (host, extra, revision) or the sync configuration cannot be used as it is, or
    the run stopped to protect data (removal threshold, flows). Airflow does not retry the task: a person
    has to act first, as the message says."""


class NostoError(AirflowException):
    """A Nosto call failed: an HTTP error, a GraphQL ``errors`` answer or an unreadable export.

    :param message: what went wrong; masked before it is stored.
    :param status: the HTTP status Nosto answered with, if there was an answer.
    :param retryable: as for :class:`KlaviyoError`.
    :param retry_after: the wait the server asked for (``Retry-After``), in seconds, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class NostoAuthError(NostoError, AirflowFailException):
    """Nosto refused a token (401 or 403). Airflow does not retry the task: the token must be fixed first."""


class NostoConfigError(NostoError, AirflowFailException):
    """The Nosto connection (host, tokens, extra) or the export location cannot be used as it is. Airflow
    does not retry the task: the setting the message names must be fixed first."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
