"""Email addresses and mobile numbers do not reach the logs in clear: the notifier and the
local sinks log them masked (`shared.logs.mask_contact`), also inside the reasons mail servers
and SMS gateways give for refusing them."""

# ruff: noqa: F811 - the notifier fixtures are imported from test_code_delivery and used by name

from __future__ import annotations

import logging

import pytest

from services.notifier.sinks import read_mail, read_sms
from shared.logs import logging_config, mask_contact
from tests.integration.test_code_delivery import (  # noqa: F401 - fixtures
    ADDRESS,
    MOBILE,
    EchoingGateway,
    code_envelope,
    database_url,
    dispatcher,
    record,
    sink_ports,
    sinks,
)

UNKNOWN_NUMBER = "+4500000000"  # the SMS sink refuses it with a 400 that quotes it
REFUSED_ADDRESS = "anna@example.invalid"  # the mail sink refuses it with a 550 that quotes it
ECHOED_NUMBER = "+4520123457"  # the echoing gateway quotes it in its error


@pytest.mark.parametrize(
    ("contact", "masked"),
    [
        ("mette@example.dk", "m•••@example.dk"),
        ("+4520123456", "+45 •• •• •4 56"),
        ('"a@b"@example.dk', '"•••@example.dk'),
        ("+4512", "•••"),
    ],
)
def test_contacts_are_masked_to_their_first_letter_domain_country_and_last_digits(
    contact: str, masked: str
) -> None:
    assert mask_contact(contact) == masked


async def test_deliveries_log_addresses_and_numbers_only_masked(db, clock, sealer, sinks, caplog) -> None:
    caplog.set_level(logging.INFO)  # the services' level; the drivers' DEBUG lines are held back too
    caplog.set_level(logging.DEBUG, logger="services.notifier")
    await record(db, clock, code_envelope(sealer, clock))
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient=ADDRESS))
    await record(db, clock, code_envelope(sealer, clock, recipient=UNKNOWN_NUMBER))
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient=REFUSED_ADDRESS))
    assert await dispatcher(db, clock, sealer, sinks).dispatch_due() == 4
    await record(db, clock, code_envelope(sealer, clock, recipient=ECHOED_NUMBER))
    assert await dispatcher(db, clock, sealer, sinks, sms=EchoingGateway()).dispatch_due() == 1

    assert len(read_sms(sinks.root, MOBILE)) == 1 and len(read_mail(sinks.root, ADDRESS)) == 1
    logged = caplog.text
    assert "delivered otp_login" in logged and "mail sink: stored" in logged and "sms sink: stored" in logged
    assert "failed for good" in logged and "attempt 1 failed" in logged
    for contact in (MOBILE, ADDRESS, UNKNOWN_NUMBER, REFUSED_ADDRESS, ECHOED_NUMBER):
        assert contact not in logged and contact.lstrip("+") not in logged, f"{contact} was logged in clear"
        assert mask_contact(contact) in logged


def test_the_database_drivers_debug_lines_with_statement_parameters_stay_out_of_the_logs() -> None:
    quiet = logging_config(service="notifier", level="DEBUG", fmt="json")["loggers"]
    assert quiet["aiosqlite"] == {"level": "WARNING"} and quiet["sqlalchemy.engine"] == {"level": "WARNING"}
