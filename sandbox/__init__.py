"""Local stand-ins for a Klaviyo account and for Nosto, plus a data generator.

The sandbox is an independent program: it never imports the provider, so the provider's tests against
it check the provider against Klaviyo's published contract rather than against itself.
"""

from __future__ import annotations

KLAVIYO_REVISION = "2026-07-15"
DEFAULT_KLAVIYO_KEY = "pk_sandbox_demo_key"
DEFAULT_NOSTO_APPS_TOKEN = "nosto_sandbox_apps_token"
DEFAULT_NOSTO_EXPORT_TOKEN = "nosto_sandbox_export_token"
