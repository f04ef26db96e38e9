"""Apache Airflow provider that keeps Klaviyo in step with Nosto's customer segments."""

from __future__ import annotations

__version__ = "0.1.0"
