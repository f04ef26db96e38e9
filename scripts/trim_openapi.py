"""Cut Klaviyo's official OpenAPI file down to the operations the sandbox serves.

The official file is about 3 MB of mostly prose. The sandbox only needs the structure of the operations
it answers (parameters, request bodies, responses, scopes, rate limits and filter rules) and the
components those reference, so this script keeps exactly that and drops every human-readable text.

Usage, from the repository root::

    .venv/bin/python scripts/trim_openapi.py [PATH_TO_OFFICIAL_JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "reference" / "klaviyo-openapi-2026-07-15.json"
TARGET = REPO_ROOT / "sandbox" / "klaviyo_openapi_trimmed.json"

#: Every (path, method) the sandbox answers. Anything else is a 404/405 there.
SERVED_OPERATIONS: dict[str, tuple[str, ...]] = {
    "/api/accounts": ("get",),
    "/api/lists": ("get", "post"),
    "/api/lists/{id}": ("get", "patch", "delete"),
    "/api/lists/{id}/profiles": ("get",),
    "/api/lists/{id}/relationships/profiles": ("get", "post", "delete"),
    "/api/lists/{id}/flow-triggers": ("get",),
    "/api/lists/{id}/relationships/flow-triggers": ("get",),
    "/api/profiles": ("get", "post"),
    "/api/profiles/{id}": ("get", "patch"),
    "/api/profiles/{id}/relationships/lists": ("get",),
    "/api/profile-import": ("post",),
    "/api/profile-bulk-import-jobs": ("get", "post"),
    "/api/profile-bulk-import-jobs/{job_id}": ("get",),
    "/api/profile-bulk-import-jobs/{id}/import-errors": ("get",),
    "/api/profile-bulk-import-jobs/{id}/lists": ("get",),
    "/api/profile-bulk-import-jobs/{id}/relationships/lists": ("get",),
    "/api/profile-bulk-import-jobs/{id}/profiles": ("get",),
    "/api/profile-bulk-import-jobs/{id}/relationships/profiles": ("get",),
    "/api/profile-subscription-bulk-create-jobs": ("post",),
    "/api/profile-subscription-bulk-delete-jobs": ("post",),
}

#: Operation keys worth keeping; the rest (summary, tags, readme hints, aliases) is documentation.
OPERATION_KEYS = (
    "operationId",
    "parameters",
    "requestBody",
    "responses",
    "x-klaviyo-scopes",
    "x-klaviyo-ratelimit",
    "x-klaviyo-filters",
)

#: Keywords that only carry prose or sample values.
TEXT_KEYWORDS = frozenset({"description", "summary", "example", "examples", "title", "externalDocs"})


def strip_text(node: Any, *, is_property_map: bool = False) -> Any:
    """Return ``node`` without documentation keywords.

    Inside a schema's ``properties`` mapping the keys are field names (a profile really has a field
    called ``title``), so they are kept there and only their values are cleaned.
    """
    if isinstance(node, list):
        return [strip_text(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned: dict[str, Any] = {}
    for key, value in node.items():
        if not is_property_map and (key in TEXT_KEYWORDS or key.startswith("x-readme")):
            continue
        cleaned[key] = strip_text(value, is_property_map=(key == "properties" and not is_property_map))
    return cleaned


def iter_refs(node: Any) -> Iterator[str]:
    """Yield every local ``$ref`` target found anywhere under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def trim(official: dict[str, Any]) -> dict[str, Any]:
    """Build the trimmed document from the parsed official one."""
    paths: dict[str, Any] = {}
    for path, methods in SERVED_OPERATIONS.items():
        path_item = official["paths"][path]
        paths[path] = {
            method: strip_text(
                {key: path_item[method][key] for key in OPERATION_KEYS if key in path_item[method]}
            )
            for method in methods
        }

    # Walk references transitively so the trimmed file resolves on its own.
    components: dict[str, dict[str, Any]] = {}
    pending = list(iter_refs(paths))
    while pending:
        ref = pending.pop()
        _, _, section, name = ref.split("/", 3)
        if name in components.get(section, {}):
            continue
        target = strip_text(official["components"][section][name])
        components.setdefault(section, {})[name] = target
        pending.extend(iter_refs(target))

    components["securitySchemes"] = strip_text(official["components"]["securitySchemes"])
    return {
        "openapi": official["openapi"],
        "info": {"title": "Klaviyo API (trimmed for the sandbox)", "version": official["info"]["version"]},
        "servers": [{"url": server["url"]} for server in official["servers"]],
        "security": official["security"],
        "paths": paths,
        "components": {section: dict(sorted(items.items())) for section, items in sorted(components.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT_SOURCE), help="the official OpenAPI JSON")
    parser.add_argument("--out", default=str(TARGET), help="where to write the trimmed JSON")
    args = parser.parse_args(argv)

    official = json.loads(Path(args.source).read_text(encoding="utf-8"))
    trimmed = trim(official)
    Path(args.out).write_text(json.dumps(trimmed, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    operations = sum(len(methods) for methods in trimmed["paths"].values())
    schemas = len(trimmed["components"].get("schemas", {}))
    print(f"wrote {args.out}: {operations} operations, {schemas} schemas", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
