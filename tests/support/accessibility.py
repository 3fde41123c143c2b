"""axe-core's WCAG 2.1 A/AA checks run inside a page the browser tests have open.

axe-core is pinned in package-lock.json and installed by ``make test`` (``npm ci``); a run
without it skips locally and fails in CI, like any other missing backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.support.backends import missing_backend

AXE_SCRIPT = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# Moderate and minor findings are advice; these stop a person from using the page.
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def blocking_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page as it is now."""
    if not AXE_SCRIPT.exists():
        missing_backend(f"axe-core at {AXE_SCRIPT} (`make test` runs npm ci)")
    if not page.evaluate("typeof window.axe === 'object'"):
        # Not a <script> tag: the page's CSP (script-src 'self') rightly refuses an inline
        # one. Evaluated through the DevTools protocol, which the CSP does not govern.
        page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8") + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        """(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})""", WCAG_TAGS
    )
    return [v for v in result["violations"] if v["impact"] in BLOCKING_IMPACTS]


def describe(violation: dict[str, Any]) -> str:
    targets = "; ".join(" ".join(node["target"]) for node in violation["nodes"])
    return f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}"


def assert_accessible(page: Page) -> None:
    """Fail listing every serious or critical axe-core violation on the page."""
    found = blocking_violations(page)
    assert not found, f"{page.url}:\n" + "\n".join(describe(v) for v in found)
