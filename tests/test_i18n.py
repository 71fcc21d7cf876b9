"""French and English: catalogs complete and current, language from the browser, a remembered switcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.template.base import Lexer, TokenType
from django.urls import reverse

from gallery.management.commands import catalog
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

ATTENDEE_TEMPLATES = sorted(
    [
        *(ROOT / "templates" / "gallery").glob("*.html"),
        *(ROOT / "templates").glob("*.html"),
        *(ROOT / "templates" / "gallery" / "email").glob("*.txt"),
    ]
)
# What a person may read in a template without translation: the product's name and punctuation.
UNTRANSLATABLE = {"Trouvaille"}
VISIBLE_ATTRIBUTES = re.compile(r"""\b(?:alt|title|aria-label|placeholder|data-label-[\w-]+|data-copied)="([^"]*)\"""")


def test_catalogs_are_current_and_complete():
    """Fails when a source string is missing from a catalog, untranslated, fuzzy, obsolete,
    or when the committed .mo does not match its .po. Runs without GNU gettext."""
    assert catalog.languages() == ["fr"]
    for language in catalog.languages():
        assert catalog.problems(language) == []


def test_the_check_notices_a_new_untranslated_string(tmp_path, monkeypatch, settings):
    template = tmp_path / "templates" / "new.html"
    template.parent.mkdir()
    template.write_text('{% load i18n %}<p>{% translate "A brand new sentence" %}</p>')
    monkeypatch.setattr(catalog, "SOURCES", (*catalog.SOURCES, ("templates", "*.html")))
    monkeypatch.setattr(catalog, "ROOT", tmp_path)
    monkeypatch.setattr(catalog, "LOCALE_DIR", ROOT / "gallery" / "locale")
    found = catalog.problems("fr")
    assert "not in the catalog: 'A brand new sentence'" in found
    assert any(problem.startswith("no longer in the sources") for problem in found)  # the real ones, unseen here


def _text_outside_translation(path: Path) -> list[str]:
    """Words a template shows that do not go through {% translate %} / {% blocktranslate %}."""
    flat, depth = [], 0
    for token in Lexer(path.read_text()).tokenize():
        if token.token_type == TokenType.BLOCK:
            name = token.contents.split()[0]
            depth += name in ("blocktranslate", "blocktrans")
            depth -= name in ("endblocktranslate", "endblocktrans")
        # Tags and variables become a placeholder; HTML tags may span several tokens.
        flat.append(token.contents if token.token_type == TokenType.TEXT and not depth else "\x00")
    html = re.sub(r"<!--.*?-->", " ", "".join(flat), flags=re.S)
    found = [value for value in VISIBLE_ATTRIBUTES.findall(html) if re.search(r"[A-Za-z]", value)]
    text = re.sub(r"&\w+;|&#\d+;", " ", re.sub(r"<[^>]*>", " ", html))
    return found + [word for word in re.findall(r"[A-Za-zÀ-ÿ][\w'\u2019-]*", text) if word not in UNTRANSLATABLE]


@pytest.mark.parametrize("path", ATTENDEE_TEMPLATES, ids=lambda path: path.name)
def test_attendee_templates_show_no_untranslated_text(path):
    assert _text_outside_translation(path) == []


def test_the_untranslated_text_check_can_fail(tmp_path):
    page = tmp_path / "page.html"
    page.write_text('{% load i18n %}<p title="Hello">{% translate "Fine" %} Forgotten <b>words</b></p>')
    assert _text_outside_translation(page) == ["Hello", "Forgotten", "words"]


def test_the_browser_language_chooses_the_page_language(client, event):
    french = client.get(reverse("gallery:event", args=[event.slug]), HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9,en;q=0.5")
    assert '<html lang="fr">' in french.content.decode() and "Trouver mes photos" in french.content.decode()
    assert "gabarit biométrique" in french.content.decode()  # the form's consent label too
    english = client.get(reverse("gallery:event", args=[event.slug]), HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.8")
    assert '<html lang="en">' in english.content.decode() and "Find my photos" in english.content.decode()
    other = client.get(reverse("gallery:event", args=[event.slug]), HTTP_ACCEPT_LANGUAGE="de-DE")
    assert "Find my photos" in other.content.decode()  # English for everyone else


def test_the_switcher_choice_is_remembered_over_the_browser_language(client, event):
    url = reverse("gallery:event", args=[event.slug])
    page = client.get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert 'name="language" value="fr"' in page.content.decode()  # the visible switcher
    response = client.post(reverse("set_language"), {"language": "fr", "next": url}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 302 and response["Location"] == url
    assert "Trouver mes photos" in client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    client.post(reverse("set_language"), {"language": "en", "next": url})
    assert "Find my photos" in client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()


def test_the_switcher_never_redirects_elsewhere(client):
    response = client.post(reverse("set_language"), {"language": "fr", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_errors_and_messages_are_translated(client, event):
    url = reverse("gallery:selfie_upload", args=[event.slug])
    from tests.conftest import jpeg_bytes, upload

    response = client.post(url, {"image": upload("me.jpg", jpeg_bytes())}, HTTP_ACCEPT_LANGUAGE="fr")
    assert response.status_code == 400 and "Veuillez accepter" in response.content.decode()
    corrupt = client.post(url, {"image": upload("x.jpg", b"not an image"), "consent": "on"}, HTTP_ACCEPT_LANGUAGE="fr")
    assert "que nous savons lire" in corrupt.content.decode()
    missing = client.get("/e/nope/", HTTP_ACCEPT_LANGUAGE="fr")
    assert missing.status_code == 404 and "n\u2019existe pas" in missing.content.decode()


def test_a_stored_failure_is_shown_in_the_attendees_language(client, event, run_jobs):
    from tests.conftest import jpeg_bytes, upload

    with run_jobs():
        client.post(
            reverse("gallery:selfie_upload", args=[event.slug]),
            {"image": upload("black.jpg", jpeg_bytes((0, 0, 0))), "consent": "on"},
        )
    page = client.get(reverse("gallery:me", args=[event.slug]), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Nous n\u2019avons pas trouvé de visage" in page


def test_the_event_admin_page_labels_every_field_in_french(admin_client, event):
    from django.urls import reverse

    page = admin_client.get(reverse("admin:gallery_event_change", args=[event.pk]), HTTP_ACCEPT_LANGUAGE="fr")
    html = page.content.decode()
    labels = {"name": "Nom", "access_code": "Code d\u2019accès", "face_tolerance": "Tolérance des visages"}
    for field, label in labels.items():
        assert f'for="id_{field}">{label}' in html, label
    assert "Face tolerance" not in html and "Access code" not in html
