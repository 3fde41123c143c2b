"""docs/openapi.yaml documents every /api/v1 route the app serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from flask import Flask

OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return spec


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_api_route_is_documented(app: Flask) -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.")
    paths: dict[str, dict[str, Any]] = spec["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in paths.get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []


def test_documented_operations_describe_their_responses() -> None:
    for path, operations in load_spec()["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method} {path} needs a summary"
            assert operation.get("responses"), f"{method} {path} needs responses"
