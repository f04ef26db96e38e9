"""Sphinx configuration of the user's manual: Markdown pages (MyST), built offline with warnings as errors."""

from __future__ import annotations

project = "airflow-provider-klaviyo-nosto"
author = "airflow-provider-klaviyo-nosto contributors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Links to sections of a page (``page.md#section``) resolve like on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "alabaster"
html_title = "Klaviyo & Nosto provider for Apache Airflow"
html_show_sourcelink = False
# Nothing is fetched while building: no intersphinx inventories, no remote images.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
