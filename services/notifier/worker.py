"""Notifier's worker: records deliveries from events (letters, one-time codes, order and invoice
emails, invoice documents), keeps the recipient directory, dispatches deliveries by channel,
watches deadlines. Its parts are built by `bootstrap.build`."""

from __future__ import annotations

import faust

from services.notifier import directory
from services.notifier.bootstrap import NotifierParts, build
from services.notifier.config import NotifierSettings
from services.notifier.models import messaging
from services.notifier.recording import DELIVERIES
from shared.clock import Clock
from shared.events import (
    UserCreated,
    UserDeleted,
    UserDetailsChanged,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from shared.messaging import Handlers
from shared.worker import Background, WorkerSpec, build_faust_app, periodic


def handlers(parts: NotifierParts) -> Handlers:
    """What the worker consumes: the handler of each event class. Every event a kind of message
    answers (`kinds.KINDS`) is recorded by the recorder; identity's users feed the directory."""
    return {
        **dict.fromkeys(parts.recorder.events, parts.recorder.record),
        UserCreated: directory.on_user_created,
        UserGrantsChanged: directory.on_user_grants_changed,
        UserDetailsChanged: directory.on_user_details_changed,
        UserDisabled: directory.on_user_disabled,
        UserEnabled: directory.on_user_enabled,
        UserDeleted: directory.on_user_deleted,
    }


def create_worker(settings: NotifierSettings | None = None, *, clock: Clock | None = None) -> faust.App:
    settings = settings or NotifierSettings()
    parts = build(settings, clock=clock)
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=parts.db,
            tables=messaging,
            handlers=handlers(parts),
            clock=parts.clock,
            background=[
                Background("dispatcher", lambda: parts.dispatcher.run_forever(settings.dispatch_interval_s)),
                periodic("sla-watch", settings.sla_check_interval_s, parts.sla.check),
            ],
            wake_after_commit={DELIVERIES: parts.dispatcher.wake},
        )
    )
