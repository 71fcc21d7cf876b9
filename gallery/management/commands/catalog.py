"""Translation catalogs without GNU gettext: extract, update, compile, check.

Django's makemessages/compilemessages need xgettext/msgfmt, which a fresh
machine may lack. This does the same with Babel: templates go through Django's
own `templatize` (what makemessages feeds xgettext), then Babel's Python
extractor reads them like any Python file. The compiled .mo files are
committed, so running the site never needs either tool.

    manage.py catalog           # add new strings to the .po files, compile the .mo files
    manage.py catalog --check   # exit 1 if a catalog is stale or a string untranslated
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation.template import templatize

ROOT = Path(settings.BASE_DIR)
LOCALE_DIR = ROOT / "gallery" / "locale"
# Where people-facing strings live: every template, and the Python of both apps.
SOURCES = (("templates", "*.html"), ("templates", "*.txt"), ("gallery", "*.py"), ("matching", "*.py"))
KEYWORDS = {
    **DEFAULT_KEYWORDS,
    "gettext_lazy": None,
    "gettext_noop": None,
    "ngettext_lazy": (1, 2),
    "pgettext_lazy": ((1, "c"), 2),
    "npgettext_lazy": ((1, "c"), 2, 3),
}
Key = str | tuple[str, str]  # a msgid, or (msgid, context)


def source_files() -> Iterator[Path]:
    for folder, pattern in SOURCES:
        for path in sorted((ROOT / folder).rglob(pattern)):
            if "migrations" not in path.parts:
                yield path


def extract_messages() -> Catalog:
    """Every translatable string of the sources, with where it comes from."""
    catalog = Catalog(project="Trouvaille", charset="utf-8")
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".html", ".txt"):
            # templatize keeps the template's lines (so line numbers hold) and
            # escapes newlines inside strings; only the indentation, meaningless
            # here, would upset Python's tokenizer.
            text = "\n".join(line.lstrip() for line in templatize(text, origin=str(path)).splitlines())
        relative = path.relative_to(ROOT).as_posix()
        for lineno, message, comments, context in extract(
            "python", io.BytesIO(text.encode("utf-8")), keywords=KEYWORDS, comment_tags=("Translators:",)
        ):
            catalog.add(message, None, [(relative, lineno)], auto_comments=comments, context=context)
    return catalog


def _strings(message: object) -> tuple[str, ...]:
    string = message.string
    return tuple(string) if isinstance(string, tuple | list) else (string,)


def _key(message: object) -> Key:
    msgid = message.id[0] if isinstance(message.id, tuple | list) else message.id
    return (msgid, message.context) if message.context else msgid


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "django.po"


def languages() -> list[str]:
    return [code for code, _ in settings.LANGUAGES if code != "en"]


def read_catalog(language: str) -> Catalog:
    path = po_path(language)
    if not path.exists():
        return Catalog(locale=language, project="Trouvaille", charset="utf-8")
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def problems(language: str) -> list[str]:
    """Why the committed catalog of `language` is not up to date with the sources (empty: it is)."""
    found: list[str] = []
    template = extract_messages()
    catalog = read_catalog(language)
    wanted = {_key(message) for message in template if message.id}
    have = {_key(message) for message in catalog if message.id}
    found += [f"not in the catalog: {key!r}" for key in sorted(wanted - have, key=str)]
    found += [f"no longer in the sources: {key!r}" for key in sorted(have - wanted, key=str)]
    for message in catalog:
        if not message.id or _key(message) not in wanted:
            continue
        if not all(_strings(message)) or message.fuzzy:
            found.append(f"untranslated{' (fuzzy)' if message.fuzzy else ''}: {_key(message)!r}")
    found += [f"format error in {message.id!r}: {error}" for message, errors in catalog.check() for error in errors]
    mo = po_path(language).with_suffix(".mo")
    if not mo.exists():
        found.append(f"{mo.relative_to(ROOT)} missing: run `manage.py catalog`")
    else:
        with mo.open("rb") as handle:
            compiled = {_key(message): _strings(message) for message in read_mo(handle) if message.id}
        expected = {_key(message): _strings(message) for message in catalog if message.id and not message.fuzzy}
        if compiled != expected:
            found.append(f"{mo.relative_to(ROOT)} is older than its .po: run `manage.py catalog`")
    return found


def update(language: str) -> Catalog:
    catalog = read_catalog(language)
    created = catalog.creation_date
    # No fuzzy guesses: a new string is untranslated until someone translates it.
    catalog.update(extract_messages(), no_fuzzy_matching=True, update_header_comment=False)
    catalog.obsolete.clear()
    # Several people add strings at once: a stable header, messages in msgid
    # order and file names without line numbers keep their merges apart.
    catalog.creation_date = created
    catalog.fuzzy = False  # a fuzzy header would make msgfmt drop it, plural rules included
    catalog.last_translator = catalog.language_team = "Trouvaille developers"
    path = po_path(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        write_po(handle, catalog, width=120, include_previous=False, include_lineno=False, sort_output=True)
    with path.with_suffix(".mo").open("wb") as handle:
        write_mo(handle, catalog)
    return catalog


class Command(BaseCommand):
    help = "Update and compile the translation catalogs (gallery/locale), or --check they are complete."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="Only report stale catalogs and missing translations.")

    def handle(self, *args: object, check: bool, **options: object) -> None:
        for language in languages():
            if check:
                found = problems(language)
                if found:
                    raise CommandError(f"{language}: " + "\n  ".join(found))
                self.stdout.write(f"{language}: up to date")
            else:
                catalog = update(language)
                missing = sum(1 for message in catalog if message.id and not message.string)
                self.stdout.write(f"{language}: {len(catalog)} strings, {missing} to translate in {po_path(language)}")
