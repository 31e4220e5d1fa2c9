"""docs/configuration.md is the one documented table of settings, and it follows the code."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.configuration_doc import (
    DOCUMENT,
    render_configuration_markdown,
    required_in_production,
    undocumented_settings,
)
from services.registry import SERVICES
from shared.sealing import generate_key
from shared.tokens import generate_signing_key


def test_the_configuration_document_matches_a_fresh_rendering_of_the_settings() -> None:
    assert DOCUMENT.read_text() == render_configuration_markdown(), (
        "docs/configuration.md is out of date: run `python -m services.configuration_doc`"
    )


def test_every_setting_and_every_compose_variable_is_explained() -> None:
    assert undocumented_settings() == []


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_environment_variable_of_every_service_has_a_row(service: str) -> None:
    parts = SERVICES[service]
    text = render_configuration_markdown()
    for name in parts.settings_type().model_fields:
        assert f"| `{parts.env_prefix}{name.upper()}` |" in text


@pytest.mark.parametrize("service", list(SERVICES))
def test_the_database_and_the_sealing_keys_are_marked_required_in_production(service: str) -> None:
    settings_type = SERVICES[service].settings_type()
    required = required_in_production(settings_type)
    assert "database_url" in required
    sealing = {"sealing_keys", "sealing_active_key_id"}
    # Only the services that seal or unseal codes need the key ring.
    assert (sealing <= required) == settings_type.uses_sealing
    assert not (sealing & required) or settings_type.uses_sealing


@pytest.mark.parametrize("service", list(SERVICES))
def test_the_settings_marked_required_are_all_that_production_needs(service: str) -> None:
    settings_type = SERVICES[service].settings_type()
    values = {
        "database_url": f"postgresql+asyncpg://adgang@postgres:5432/{service}",
        "sealing_keys": f"k1:{generate_key()}",
        "sealing_active_key_id": "k1",
        "portal_url": "https://selvbetjening.example.dk",
        "email_smtp_host": "smtp.example.dk",
        "email_from": "Adgang Selvbetjening <no-reply@example.dk>",
        "sms_gateway_url": "https://sms.example.dk/v1/sms",
        "sms_gateway_token": "a-gateway-token",
        "billing_document_token": "a-document-token",
        "signing_keys": f"s1:{generate_signing_key()}",
        "signing_active_key_id": "s1",
    }
    assert required_in_production(settings_type) <= set(values), "give the new required setting a value here"
    settings_type.model_validate({"environment": "production", **values})
    with pytest.raises(ValidationError):
        settings_type.model_validate({"environment": "production"})


def test_settings_that_production_does_not_require_are_not_marked_required() -> None:
    required = required_in_production(SERVICES["notifier"].settings_type())
    assert "eboks_http_url" not in required
    assert "http_port" not in required
