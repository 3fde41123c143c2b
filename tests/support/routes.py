"""Builds a concrete URL for every rule in the app's url_map, for walks over all routes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Flask
from werkzeug.routing import Rule

SAMPLE_ARGUMENTS: dict[str, str] = {"uuid": str(uuid.UUID(int=1, version=4)), "int": "1"}


@dataclass(frozen=True)
class Route:
    rule: Rule
    method: str
    url: str

    @property
    def endpoint(self) -> str:
        return str(self.rule.endpoint)


def sample_url(rule: Rule) -> str:
    values: dict[str, str] = {}
    for argument in rule.arguments:
        converter = type(rule._converters[argument]).__name__.lower()
        kind = next((k for k in SAMPLE_ARGUMENTS if k in converter), None)
        values[argument] = SAMPLE_ARGUMENTS[kind] if kind else "sample"
    if rule.endpoint == "static":
        values["filename"] = "style.css"
    built = rule.build(values, append_unknown=False)
    assert built is not None
    url: str = built[1]
    return url


def every_route(app: Flask) -> Iterator[Route]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield Route(rule=rule, method=method, url=sample_url(rule))
