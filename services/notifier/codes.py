"""The messages that carry a one-time code to a person (S7): an SMS, or an email.

Codes are short-lived, so the messages say when the code stops working, in Danish time, and
that it must never be shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.notifier.letters import LETTER_TIME_ZONE, require_supported, templates

Purpose = Literal[
    "login",
    "confirm_mobile",
    "confirm_email",
    "unlock_login",
    "reset_password",
    "confirm_new_email",
    "confirm_new_mobile",
]


@dataclass(frozen=True)
class CodeEmail:
    subject: str
    text: str


def render_code_sms(*, language: str, purpose: Purpose, code: str, expires_at: datetime) -> str:
    template = templates.get_template(f"otp.{language}.sms.txt.j2")
    return template.render(**_context(language, purpose, code, expires_at)).strip()


def render_code_email(*, language: str, purpose: Purpose, code: str, expires_at: datetime) -> CodeEmail:
    template = templates.get_template(f"otp.{language}.email.txt.j2")
    module = template.make_module(_context(language, purpose, code, expires_at))
    # The template sets `subject` at its top level: the module exports it beside the body.
    return CodeEmail(subject=str(getattr(module, "subject")), text=str(module).strip() + "\n")  # noqa: B009


def format_clock_time(moment: datetime, *, language: str) -> str:
    """The time of day as people write it in `language`, in Copenhagen time (codes live minutes)."""
    local = moment.astimezone(LETTER_TIME_ZONE)
    return f"{local:%H.%M}" if language == "da" else f"{local:%H:%M} (Danish time)"


def _context(language: str, purpose: Purpose, code: str, expires_at: datetime) -> dict[str, str]:
    require_supported(language)
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise ValueError("expires_at must be timezone-aware")
    return {"purpose": purpose, "code": code, "expires": format_clock_time(expires_at, language=language)}
