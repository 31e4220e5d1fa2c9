"""The portal's two languages: message catalogues, and dates in Danish time.

Texts live in gettext catalogues, `locale/<language>/<area>.po`, one file per area of the
site, keyed by message ids like `login.heading`; every id has a Danish and an English text
(`tests/unit/test_portal_catalogues.py`). The catalogues are read with Babel when the portal
starts, so there is no compile step and no compiled file to keep in step.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("da", "en")
DEFAULT_LANGUAGE = "da"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DANISH_TIME = ZoneInfo("Europe/Copenhagen")

# How a moment is written: the Danish way in Danish ("2. december 2026 kl. 14.05"), and in
# English as people in Denmark read it; always in Danish time, since that is where the
# customers are.
_DATETIME_FORMATS = {"da": "d. MMMM y 'kl.' HH.mm", "en": "d MMMM y 'at' HH:mm"}
_TIME_FORMATS = {"da": "HH.mm.ss", "en": "HH:mm:ss"}
_BABEL_LOCALES = {"da": "da_DK", "en": "en_GB"}


def read_catalogues(language: str, directory: Path = LOCALE_DIR) -> dict[str, Catalog]:
    """Each area's catalogue of a language, by file name."""
    catalogues = {}
    for path in sorted((directory / language).glob("*.po")):
        with path.open("rb") as handle:
            catalogues[path.stem] = read_po(handle, locale=_BABEL_LOCALES[language])
    return catalogues


def _translations(catalogues: Iterable[Catalog]) -> Translations:
    merged: Translations | None = None
    for catalogue in catalogues:
        buffer = io.BytesIO()
        write_mo(buffer, catalogue)
        buffer.seek(0)
        translations = Translations(fp=buffer)
        if merged is None:
            merged = translations
        else:
            merged.merge(translations)
    return merged or Translations()


class Texts:
    """The product's words in one language."""

    def __init__(self, language: str, translations: Translations) -> None:
        self.language = language
        self._translations = translations

    def gettext(self, message_id: str, **values: object) -> str:
        text = self._translations.gettext(message_id)
        return text.format(**values) if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        text = self._translations.ngettext(singular, plural, n)
        return text.format(n=n, **values)

    def when(self, moment: datetime | str | None) -> str:
        """A moment, in Danish time, written the way of this language."""
        if moment is None:
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return format_datetime(
            moment, _DATETIME_FORMATS[self.language], tzinfo=DANISH_TIME, locale=_BABEL_LOCALES[self.language]
        )

    def time_of_day(self, moment: datetime) -> str:
        return format_datetime(
            moment, _TIME_FORMATS[self.language], tzinfo=DANISH_TIME, locale=_BABEL_LOCALES[self.language]
        )


def load_texts(directory: Path = LOCALE_DIR) -> dict[str, Texts]:
    return {
        language: Texts(language, _translations(read_catalogues(language, directory).values()))
        for language in LANGUAGES
    }


def chosen_language(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE
