"""The credentials letter the company reads in its e-Boks (S2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from services.notifier.email import EmailReceipt, parse_mailbox
from services.notifier.kinds import LoginEmail
from services.notifier.letters import letter_label, render_credentials_letter
from services.notifier.models import Delivery
from shared.events import LoginCreated
from shared.sealing import Sealer, generate_key, parse_keyring

SUMMER_EXPIRY = datetime(2024, 5, 14, 13, 30, tzinfo=UTC)  # 15:30 in Copenhagen (CEST)
WINTER_EXPIRY = datetime(2024, 1, 3, 7, 5, tzinfo=UTC)  # 08:05 in Copenhagen (CET)


def letter(**overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "language": "da",
        "company_name": "Jensen & Søn ApS",
        "cvr": "87654321",
        "username": "jensen-admin-01",
        "activation_code": "7Q4K-93XZ-LM2P",
        "expires_at": SUMMER_EXPIRY,
        "portal_url": "https://selvbetjening.example.dk",
    }
    kwargs.update(overrides)
    return render_credentials_letter(**kwargs)


@pytest.mark.parametrize("language", ["da", "en"])
def test_the_letter_gives_the_company_its_cvr_username_code_and_where_to_activate(
    language: str,
) -> None:
    text = letter(language=language)

    assert "87654321" in text
    assert "jensen-admin-01" in text
    assert "7Q4K-93XZ-LM2P" in text
    # The portal's activation page with the username filled in (S2).
    assert "https://selvbetjening.example.dk/aktiver?username=jensen-admin-01" in text
    assert "Jensen & Søn ApS" in text  # plain text: no HTML escaping of the name


def test_the_danish_letter_states_the_expiry_in_danish_and_copenhagen_time() -> None:
    assert "14. maj 2024 kl. 15.30" in letter(language="da", expires_at=SUMMER_EXPIRY)
    assert "3. januar 2024 kl. 08.05" in letter(language="da", expires_at=WINTER_EXPIRY)


def test_the_english_letter_states_the_expiry_in_english_and_copenhagen_time() -> None:
    assert "14 May 2024 at 15:30" in letter(language="en", expires_at=SUMMER_EXPIRY)
    assert "3 January 2024 at 08:05" in letter(language="en", expires_at=WINTER_EXPIRY)


def test_the_letter_is_danish_unless_asked_otherwise() -> None:
    kwargs: dict[str, Any] = {
        "company_name": "Acme ApS",
        "cvr": "12345678",
        "username": "acme",
        "activation_code": "CODE",
        "expires_at": SUMMER_EXPIRY,
        "portal_url": "https://example.dk",
    }

    assert render_credentials_letter(**kwargs) == letter(language="da", **kwargs)
    assert "Aktiveringskode" in render_credentials_letter(**kwargs)


@pytest.mark.parametrize(
    ("language", "words"),
    [("da", "kontakte vores erhvervssupport"), ("en", "contact our business support")],
)
def test_the_letter_tells_a_company_that_did_not_apply_to_contact_support(language: str, words: str) -> None:
    assert words in " ".join(letter(language=language).split())


def test_an_unsupported_language_is_rejected_naming_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="da, en"):
        letter(language="de")
    with pytest.raises(ValueError, match="da, en"):
        letter_label("de")


def test_an_expiry_without_time_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        letter(expires_at=datetime(2024, 5, 14, 15, 30))


def test_the_inbox_subject_is_short_and_in_the_letters_language() -> None:
    assert letter_label("da") != letter_label("en")
    assert all(0 < len(letter_label(lang)) <= 60 for lang in ("da", "en"))


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("da", ["sendt den 14. maj 2024 kl. 15.30 af", "Ole Hansen", "o•••@example.dk", "+45 •• •• •4 56"]),
        ("en", ["sent on 14 May 2024 at 15:30 (Danish time) by", "Ole Hansen", "o•••@example.dk"]),
    ],
)
def test_the_letter_says_who_applied_and_when(language: str, words: list[str]) -> None:
    from shared.events import Applicant

    applicant = Applicant(
        name="Ole Hansen", email="o•••@example.dk", mobile="+45 •• •• •4 56", applied_at=SUMMER_EXPIRY
    )
    text = " ".join(letter(language=language, applicant=applicant).split())
    assert all(w in text for w in words), text


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("da", "angiver selv sit eget mobilnummer og sin egen e-mailadresse"),
        ("en", "gives their own mobile number and email address"),
    ],
)
def test_every_letter_says_the_activator_sets_their_own_mobile_and_email(language: str, words: str) -> None:
    text = " ".join(letter(language=language).split())  # also a letter from before applicants were named
    assert words in text and "None" not in text


def test_the_letters_link_encodes_the_username_and_tolerates_a_trailing_slash() -> None:
    text = letter(username="a b&c=d", portal_url="https://selvbetjening.example.dk/")
    assert "https://selvbetjening.example.dk/aktiver?username=a+b%26c%3Dd" in text


@pytest.mark.parametrize("language", ["da", "en"])
async def test_the_colleagues_email_links_to_the_portals_activation_page_with_the_username(
    language: str,
) -> None:
    """S6: the email about a new login opens the portal's activation page, username filled in."""
    sealer = Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")
    user_id = uuid.uuid4()
    event = LoginCreated(
        user_id=user_id,
        tenant_cvr="35657193",
        company_name="Nordlys Holding A/S",
        name="Jonas Berg",
        recipient_email="jonas@example.dk",
        username="35657193-ab+c",
        activation_code=sealer.seal(
            "ABCD-EFGH-JKMN-PQRS-TVWX", context=LoginCreated.sealing_context(user_id)
        ),
        expires_at=SUMMER_EXPIRY,
        created_by_name="Mette Holm",
        language=language,
    )
    sent: list[EmailMessage] = []

    class Tray:
        async def send(self, message: EmailMessage) -> EmailReceipt:
            sent.append(message)
            return EmailReceipt(message_id=str(message["Message-ID"]), location="tray")

    await LoginEmail(
        sealer=sealer,
        email=Tray(),
        email_from=parse_mailbox("Adgang <no-reply@adgang.example.dk>"),
        portal_url="https://selvbetjening.example.dk/",
    ).send(
        Delivery(
            id=str(uuid.uuid4()),
            source_event_id=str(uuid.uuid4()),
            source_event_type=event.TYPE,
            source_payload=event.model_dump_json(),
            channel="email",
            recipient="jonas@example.dk",
            kind="login_created",
            message_id=str(uuid.uuid4()),
            created_at=SUMMER_EXPIRY,
        )
    )
    [mail] = sent
    assert "https://selvbetjening.example.dk/aktiver?username=35657193-ab%2Bc" in mail.get_content()


def test_letters_link_to_the_local_portal_in_development_and_the_suite_gives_the_notifier_its_address(
    tmp_path, monkeypatch
) -> None:
    from services.notifier.config import NotifierSettings
    from services.suite import Suite, SuiteConfig

    monkeypatch.delenv("ADGANG_NOTIFIER_PORTAL_URL", raising=False)
    assert NotifierSettings.model_validate({"var_dir": tmp_path}).portal_address == "http://127.0.0.1:8000"
    config = SuiteConfig(var_dir=tmp_path)
    config.ports["portal"] = 8100
    env = Suite(config).service_env()
    monkeypatch.setenv("ADGANG_NOTIFIER_PORTAL_URL", env["ADGANG_NOTIFIER_PORTAL_URL"])
    assert NotifierSettings.model_validate({"var_dir": tmp_path}).portal_address == "http://127.0.0.1:8100"
