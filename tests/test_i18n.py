"""Latvian by default, English by a persistent switch, and a complete Latvian catalogue."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po
from flask.testing import FlaskClient

from tests.support.webclient import csrf_token_from

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "vault" / "translations" / "lv" / "LC_MESSAGES" / "messages.po"
TEMPLATES = ROOT / "vault" / "web" / "templates"


def test_every_message_has_a_latvian_translation(tmp_path: Path) -> None:
    template = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "-k",
            "lazy_gettext",
            "-o",
            str(template),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with template.open("rb") as handle:
        extracted = {m.id for m in read_po(handle) if m.id}
    with CATALOGUE.open("rb") as handle:
        catalogue = read_po(handle, locale="lv")
    translated = {
        m.id
        for m in catalogue
        if m.id and not m.fuzzy and (all(m.string) if isinstance(m.string, tuple) else m.string)
    }
    assert extracted, "the extractor found no messages"
    # A counted message's id is its (singular, plural) pair: compare them as text.
    assert sorted(map(str, extracted - translated)) == []


JINJA_BLOCKS = re.compile(r"{#.*?#}|{%.*?%}|{{.*?}}", re.DOTALL)
TRANSLATED_ATTRIBUTES = re.compile(
    r'\b(?:title|alt|placeholder|aria-label|aria-description)\s*=\s*"([^"]*)"'
)
# A button's value is shown to people; a checkbox's, radio's or hidden field's is a code.
BUTTON_VALUES = re.compile(
    r'<input\b[^>]*\btype="(?:submit|button|reset)"[^>]*\bvalue="([^"]*)"', re.IGNORECASE
)
TAGS = re.compile(r"<[^>]*>", re.DOTALL)
LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)


def literal_strings(source: str) -> list[str]:
    without_jinja = JINJA_BLOCKS.sub(" ", source)
    attributes = TRANSLATED_ATTRIBUTES.findall(without_jinja) + BUTTON_VALUES.findall(without_jinja)
    found = [v for v in attributes if LETTERS.search(v)]
    text_only = TAGS.sub(" ", without_jinja)
    found += [chunk.strip() for chunk in text_only.split("\n") if LETTERS.search(chunk)]
    return found


def test_templates_hold_no_untranslated_user_facing_text() -> None:
    offenders = {
        str(path.relative_to(ROOT)): literal_strings(path.read_text(encoding="utf-8"))
        for path in sorted(TEMPLATES.rglob("*.html"))
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_literal_text_check_catches_an_offender() -> None:
    sample = (
        '<p>Hello</p><img alt="A cat" src="x.png"><p>{{ _("fine") }}</p>'
        '<input type="submit" value="Send"><input type="radio" name="k" value="code">'
    )
    assert literal_strings(sample) == ["A cat", "Send", "Hello"]


def test_latvian_is_the_default(client: FlaskClient) -> None:
    body = client.get("/").get_data(as_text=True)
    assert '<html lang="lv">' in body
    assert "Ierakstu glabātuve" in body


def test_switch_to_english_persists(client: FlaskClient) -> None:
    token = csrf_token_from(client)
    response = client.post("/language", data={"lang": "en", "next": "/", "csrf_token": token})
    assert response.status_code == 303
    assert "vault_lang=en" in response.headers["Set-Cookie"]
    for _ in range(2):
        body = client.get("/").get_data(as_text=True)
        assert '<html lang="en">' in body
        assert "Recording Vault" in body and "Ierakstu glabātuve" not in body
    client.post("/language", data={"lang": "lv", "next": "/", "csrf_token": token})
    assert '<html lang="lv">' in client.get("/").get_data(as_text=True)


def test_error_pages_follow_the_language(client: FlaskClient) -> None:
    assert "Nav atrasts" in client.get("/missing").get_data(as_text=True)
    assert "Not found" in client.get("/missing?lang=en").get_data(as_text=True)
