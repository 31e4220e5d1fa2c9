"""The portal's parts, built once per process: the API (`services.portal.api.create_api`) and
the tests get them from `build`. Tests put the services in-process through `transports`
(`tests/support/asgi.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.portal.clients import Services
from services.portal.config import PortalSettings
from services.portal.i18n import Texts, load_texts
from services.portal.sessions import SessionStore
from shared.clock import Clock
from shared.db import Database

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@dataclass
class PortalParts:
    """The parts a page uses (`PageContext.portal`)."""

    settings: PortalSettings
    db: Database
    services: Services
    sessions: SessionStore
    texts: dict[str, Texts]
    templates: Environment
    clock: Clock


def template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment


def build(
    settings: PortalSettings | None = None,
    *,
    clock: Clock | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> PortalParts:
    settings = settings or PortalSettings()
    clock = clock or settings.clock()
    db = Database(settings.db_url)
    return PortalParts(
        settings=settings,
        db=db,
        services=Services.connect(settings, transports),
        sessions=SessionStore(db, settings.sealer(), clock, settings),
        texts=load_texts(),
        templates=template_environment(),
        clock=clock,
    )
