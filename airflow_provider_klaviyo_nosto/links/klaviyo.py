"""Operator extra links: buttons on a task instance in the Airflow UI that open the Klaviyo app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the Klaviyo web app shows a list and its members.
KLAVIYO_LIST_URL = "https://www.klaviyo.com/list/{list_id}"


class KlaviyoListLink(BaseOperatorLink):
    """
    "Klaviyo list": the address-book list a push task writes to, opened in the Klaviyo app.

    Airflow renders the link on the worker when the task ends (and stores it with the task instance), so it
    is read from the task's own push spec; a spec without a list id (a dry run before the list exists)
    gives no link.
    """

    name = "Klaviyo list"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        push: Any = getattr(operator, "push", None)
        list_id = push.get("list_id") if isinstance(push, dict) else None
        return KLAVIYO_LIST_URL.format(list_id=list_id) if list_id else ""
