"""Provider metadata read by Airflow's ``ProvidersManager`` through the ``apache_airflow_provider`` entry point.

Airflow 3.2+ builds the connection forms from ``ui-field-behaviour`` and ``conn-fields`` here without
importing the hooks; Airflow 3.1 still calls the hooks' ``get_ui_field_behaviour()``, which says the same of
the standard fields, but has no extra fields for the Nosto export token and URL (they go in the Extra JSON
there, as docs/connections.md says).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_klaviyo_nosto import __version__

_PACKAGE = "airflow_provider_klaviyo_nosto"


def get_provider_info() -> dict[str, Any]:
    """Return the provider's description in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-klaviyo-nosto",
        "name": "Klaviyo & Nosto",
        "description": "Keeps Klaviyo lists and profile properties in step with Nosto's customer segments.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Klaviyo",
                "external-doc-url": "https://developers.klaviyo.com/en/reference/api_overview",
                "tags": ["service"],
            },
            {
                "integration-name": "Nosto",
                "external-doc-url": "https://docs.nosto.com/techdocs/apis/graphql",
                "tags": ["service"],
            },
        ],
        "hooks": [
            {"integration-name": "Klaviyo", "python-modules": [f"{_PACKAGE}.hooks.klaviyo"]},
            {"integration-name": "Nosto", "python-modules": [f"{_PACKAGE}.hooks.nosto"]},
        ],
        "operators": [
            {
                "integration-name": "Klaviyo",
                "python-modules": [
                    f"{_PACKAGE}.operators.sync",
                    f"{_PACKAGE}.operators.push",
                    f"{_PACKAGE}.operators.segment_targets",
                ],
            },
        ],
        "sensors": [
            {"integration-name": "Klaviyo", "python-modules": [f"{_PACKAGE}.sensors.klaviyo"]},
            {"integration-name": "Nosto", "python-modules": [f"{_PACKAGE}.sensors.nosto"]},
        ],
        "triggers": [
            {"integration-name": "Klaviyo", "python-modules": [f"{_PACKAGE}.triggers.klaviyo"]},
        ],
        "extra-links": [f"{_PACKAGE}.links.klaviyo.KlaviyoListLink"],
        "connection-types": [
            {
                "connection-type": "klaviyo",
                "hook-class-name": f"{_PACKAGE}.hooks.klaviyo.KlaviyoHook",
                "hook-name": "Klaviyo",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"password": "Private API key", "host": "API base URL"},
                    "placeholders": {
                        "host": "https://a.klaviyo.com",
                        "password": "pk_...",
                        "extra": '{"timeout": 60, "proxies": {"https": "http://proxy.example.com:3128"}}',
                    },
                },
                # The API revision is pinned in code, so the form needs no field of its own.
                "conn-fields": {},
            },
            {
                "connection-type": "nosto",
                "hook-class-name": f"{_PACKAGE}.hooks.nosto.NostoHook",
                "hook-name": "Nosto",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"password": "API_APPS token", "host": "API base URL"},
                    "placeholders": {"host": "https://api.nosto.com", "password": "API_APPS token"},
                },
                "conn-fields": {
                    "export_token": {
                        "label": "Segment Export token",
                        "description": "Token of Nosto's Segment Export, sent as a Bearer header, never in a URL.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "export_url": {
                        "label": "Segment Export URL",
                        "description": "HTTPS URL or object-storage path of the export; "
                        "empty means <API base URL>/v1/segment-export/latest.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            },
        ],
    }
