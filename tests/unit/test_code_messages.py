"""The messages that carry one-time codes (S7): short SMS, proper mail, and settings that send
them to the local sinks in development and refuse to guess in production."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr, ValidationError

from services.notifier.codes import render_code_email, render_code_sms
from services.notifier.config import NotifierSettings
from services.notifier.email import build_email, message_id_header, parse_mailbox
from services.notifier.memo import message_uuid_for
from services.notifier.sms import SmsGateway, gsm7_septets, msisdn, sms_segments
from shared.sealing import generate_key

EXPIRES = datetime(2026, 11, 25, 13, 5, tzinfo=UTC)  # 14.05 in Copenhagen
LANGUAGES = ["da", "en"]
PURPOSES = ["login", "confirm_mobile", "confirm_email", "reset_password"]
EMAIL_PURPOSES = [*PURPOSES, "unlock_login"]  # an unlock code goes to the user's email only
SENDER = parse_mailbox("Adgang Selvbetjening <no-reply@adgang.example.dk>")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_code_sms_fits_in_one_gsm7_message(language: str, purpose: str) -> None:
    text = render_code_sms(language=language, purpose=purpose, code="12345678", expires_at=EXPIRES)
    septets = gsm7_septets(text)
    assert septets is not None, f"not GSM-7: {text!r}"
    assert septets <= 160 and sms_segments(text) == 1
    assert text.startswith("12345678 "), "the code comes first, so the phone's preview shows it"


def test_the_danish_login_sms_says_when_the_code_expires_in_danish_time() -> None:
    text = render_code_sms(language="da", purpose="login", code="482913", expires_at=EXPIRES)
    assert text == (
        "482913 er din engangskode til Selvbetjening. Den udløber kl. 14.05. Del den aldrig med andre."
    )


def test_a_text_outside_gsm7_is_counted_in_ucs2_segments() -> None:
    assert gsm7_septets("Hej 🙂") is None
    assert sms_segments("🙂" * 35) == 1 and sms_segments("é" * 71) == 1  # é is GSM-7
    assert sms_segments("ł" * 71) == 2
    assert sms_segments("a" * 161) == 2 and gsm7_septets("€") == 2


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("purpose", EMAIL_PURPOSES)
def test_every_code_email_has_a_subject_and_the_code_in_its_text(language: str, purpose: str) -> None:
    mail = render_code_email(language=language, purpose=purpose, code="482913", expires_at=EXPIRES)
    assert mail.subject and "\n" not in mail.subject
    assert "482913" in mail.text and "482913" not in mail.subject
    assert ("14.05" if language == "da" else "14:05") in mail.text


@pytest.mark.parametrize(("language", "ignore"), [("da", "se bort fra"), ("en", "ignore this email")])
def test_a_password_reset_code_says_what_it_is_for_and_what_to_do_if_nobody_asked(language: str, ignore: str) -> None:
    mail = render_code_email(language=language, purpose="reset_password", code="482913", expires_at=EXPIRES)
    sms = render_code_sms(language=language, purpose="reset_password", code="482913", expires_at=EXPIRES)
    assert ("adgangskode" if language == "da" else "password") in mail.subject.lower()
    assert ignore in mail.text and "482913" in sms
    assert ("adgangskode" if language == "da" else "password") in sms


def test_a_code_email_is_plain_utf8_text_with_every_header_a_mail_needs() -> None:
    created = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    message = build_email(
        message_id="0b5c9b8e-3f2d-5a51-9c11-1c2f0d6d4e77",
        sender=SENDER,
        to="mette@example.dk",
        subject="Din engangskode til Selvbetjening",
        text="Koden er 482913. Den udløber kl. 14.05.\n",
        date=created,
        language="da",
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == "<0b5c9b8e-3f2d-5a51-9c11-1c2f0d6d4e77@adgang.example.dk>"
    assert parsed["Date"].datetime == created
    assert parsed["From"].addresses[0].display_name == "Adgang Selvbetjening"
    assert parsed["From"].addresses[0].addr_spec == "no-reply@adgang.example.dk"
    assert parsed["To"] == "mette@example.dk"
    assert parsed["Subject"] == "Din engangskode til Selvbetjening"
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed["Content-Language"] == "da"
    assert parsed.get_content() == "Koden er 482913. Den udløber kl. 14.05.\n"


def test_the_message_id_is_the_same_for_the_same_event_and_differs_between_events() -> None:
    first = message_id_header(str(message_uuid_for("event-1")), domain="adgang.example.dk")
    again = message_id_header(str(message_uuid_for("event-1")), domain="adgang.example.dk")
    other = message_id_header(str(message_uuid_for("event-2")), domain="adgang.example.dk")
    assert first == again != other
    assert first.startswith("<") and first.endswith("@adgang.example.dk>")


def test_a_mail_without_a_timezone_on_its_date_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_email(
            message_id="x",
            sender=SENDER,
            to="a@example.dk",
            subject="s",
            text="t",
            date=datetime(2026, 1, 1),
            language="da",
        )


@pytest.mark.parametrize("value", ["no-reply", "Adgang <>", "Adgang <no reply@example.dk>", ""])
def test_a_sender_that_is_not_a_mailbox_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_mailbox(value)


def test_an_e164_number_becomes_the_gateways_msisdn_and_anything_else_is_refused() -> None:
    assert msisdn("+4520123456") == 4520123456
    for wrong in ("4520123456", "+45 20 12 34 56", "+045201234", "+45", "+4520123456789012"):
        with pytest.raises(ValueError):
            msisdn(wrong)


def test_an_sms_sender_name_longer_than_eleven_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="11"):
        SmsGateway(url="http://127.0.0.1:1/v1/sms", token=SecretStr("t"), sender="Adgang Erhverv")


def test_in_development_mail_and_sms_go_to_the_local_sinks(tmp_path) -> None:
    settings = NotifierSettings.model_validate({"var_dir": tmp_path})
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("127.0.0.1", 8025, "none")
    assert settings.sms_url == "http://127.0.0.1:8005/v1/sms"
    assert settings.sinks_dir == tmp_path / "sinks"


def test_production_refuses_to_start_without_a_mail_server_and_an_sms_gateway() -> None:
    base = {
        "environment": "production",
        "database_url": "postgresql+asyncpg://adgang@postgres/notifier",
        "sealing_keys": f"k1:{generate_key()}",
        "sealing_active_key_id": "k1",
        "portal_url": "https://selvbetjening.example.dk",
    }
    with pytest.raises(
        ValidationError, match="email_smtp_host, email_from, sms_gateway_url, sms_gateway_token"
    ):
        NotifierSettings.model_validate(base)
    settings = NotifierSettings.model_validate(
        base
        | {
            "email_smtp_host": "smtp.example.dk",
            "email_from": "Adgang <no-reply@example.dk>",
            "sms_gateway_url": "https://gatewayapi.example/rest/mtsms",
            "sms_gateway_token": "secret",
            "billing_document_token": "a-document-token",
        }
    )
    assert (settings.smtp_port, settings.smtp_tls) == (587, "starttls")


def test_a_code_message_shows_the_expiry_of_a_code_issued_in_summer_in_summer_time() -> None:
    summer = datetime(2026, 7, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=10)
    assert "kl. 12.10" in render_code_sms(language="da", purpose="login", code="1", expires_at=summer)
