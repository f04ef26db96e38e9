from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from airflow_provider_klaviyo_nosto.links.klaviyo import KlaviyoListLink
from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator


def link_for(push: Any) -> str:
    operator: Any = SimpleNamespace(push=push)
    return KlaviyoListLink().get_link(operator, ti_key=None)  # type: ignore[arg-type]


def test_the_link_opens_the_push_tasks_list_in_klaviyo():
    assert link_for({"list_id": "Xy12Ab", "segment_name": "VIP"}) == "https://www.klaviyo.com/list/Xy12Ab"


def test_no_list_id_gives_no_link():
    assert link_for({"list_id": None}) == ""
    assert link_for("{{ not rendered }}") == ""


def test_every_push_task_carries_the_link():
    names = [link.name for link in KlaviyoSegmentPushOperator.operator_extra_links]
    assert names == ["Klaviyo list"]


def test_the_link_is_registered_with_airflow():
    from airflow.providers_manager import ProvidersManager

    assert (
        "airflow_provider_klaviyo_nosto.links.klaviyo.KlaviyoListLink"
        in ProvidersManager().extra_links_class_names
    )
