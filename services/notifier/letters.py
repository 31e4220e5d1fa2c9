"""The credentials letter a company receives in its e-Boks after applying (S1, S2), and how
every message writes times, days and amounts in its language."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shared.events import Applicant

SUPPORTED_LANGUAGES = ("da", "en")
DEFAULT_LANGUAGE = "da"

# The customers are Danish companies; the expiry is shown in the time their staff live in.
LETTER_TIME_ZONE = ZoneInfo("Europe/Copenhagen")

_LABELS = {
    "da": "Dit login til Selvbetjening",
    "en": "Your login to Self-service",
}
_DANISH_MONTHS = (
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
)
_ENGLISH_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Plain-text letters, mails and SMS: HTML escaping would only garble names such as
# "Jensen & Co ApS".
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,  # noqa: S701 - text/plain output, never rendered as HTML
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # the templates ship with the code: no stat of their file at each message
)


def activation_link(portal_url: str, username: str) -> str:
    """The portal's activation page with the username filled in (S2), for the letter and the
    colleague's email: the reader types only the code and a password."""
    return f"{portal_url.rstrip('/')}/aktiver?{urlencode({'username': username})}"


def cancel_link(portal_url: str, token: str) -> str:
    """The portal's page that shows a takeover and cancels it on confirmation."""
    return f"{portal_url.rstrip('/')}/overtagelse/annuller/{token}"


def render_credentials_letter(
    *,
    language: str = DEFAULT_LANGUAGE,
    company_name: str,
    cvr: str,
    username: str,
    activation_code: str,
    expires_at: datetime,
    portal_url: str,
    applicant: Applicant | None = None,
    takeover_usable_from: datetime | None = None,
    takeover_notice_hours: int | None = None,
) -> str:
    """Write the letter that hands a company its first administrator login (S2).

    ``expires_at`` must be timezone-aware; the letter shows it in Copenhagen time. The letter
    says who applied and when (``applicant``, contact details masked), and that whoever
    activates the login sets and confirms their own mobile number and email: the application
    form is public, so a company that did not apply sees what happened and that the login is
    useless without this letter.
    """
    require_supported(language)
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise ValueError("expires_at must be timezone-aware")
    # A takeover's letter says that the code works only after the notice period, and why.
    name = "takeover_letter" if takeover_usable_from is not None else "credentials_letter"
    template = templates.get_template(f"{name}.{language}.txt.j2")
    return template.render(
        usable_from=format_expiry(takeover_usable_from, language=language) if takeover_usable_from else "",
        notice_hours=takeover_notice_hours or 0,
        company_name=company_name,
        cvr=cvr,
        username=username,
        activation_code=activation_code,
        expires=format_expiry(expires_at, language=language),
        activation_link=activation_link(portal_url, username),
        applicant=applicant,
        applied=format_expiry(applicant.applied_at, language=language) if applicant else "",
    )


def letter_label(language: str) -> str:
    """The short subject the company sees in its e-Boks inbox (the MeMo label)."""
    require_supported(language)
    return _LABELS[language]


def format_expiry(moment: datetime, *, language: str) -> str:
    """A point in time as people write it in ``language``, in Copenhagen time."""
    require_supported(language)
    local = moment.astimezone(LETTER_TIME_ZONE)
    if language == "da":
        month = _DANISH_MONTHS[local.month - 1]
        return f"{local.day}. {month} {local.year} kl. {local:%H.%M}"
    month = _ENGLISH_MONTHS[local.month - 1]
    return f"{local.day} {month} {local.year} at {local:%H:%M} (Danish time)"


def format_day(day: date, *, language: str) -> str:
    """A calendar day as people write it in ``language``: "1. marts 2026", "1 March 2026"."""
    require_supported(language)
    if language == "da":
        return f"{day.day}. {_DANISH_MONTHS[day.month - 1]} {day.year}"
    return f"{day.day} {_ENGLISH_MONTHS[day.month - 1]} {day.year}"


def format_amount(ore: int, *, language: str) -> str:
    """An amount in øre as people write kroner in ``language``: "1.234,50 kr.", "DKK 1,234.50"."""
    require_supported(language)
    sign = "-" if ore < 0 else ""
    kroner, rest = divmod(abs(ore), 100)
    if language == "da":
        return f"{sign}{kroner:,}".replace(",", ".") + f",{rest:02d} kr."
    return f"DKK {sign}{kroner:,}.{rest:02d}"


def require_supported(language: str) -> None:
    if language not in SUPPORTED_LANGUAGES:
        supported = ", ".join(SUPPORTED_LANGUAGES)
        raise ValueError(f"unsupported letter language {language!r}; supported: {supported}")
