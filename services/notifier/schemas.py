"""The notifier API's response models: delivery records (S3, S13) and, in development, what
the local e-Boks, mail and SMS sinks received."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class DeliveryOut(BaseModel):
    id: str
    kind: str
    channel: str
    recipient: str
    status: str
    attempts: int
    message_id: str
    application_id: str | None
    created_at: datetime
    deliver_by: datetime | None
    expires_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    sla_breached: bool


class LetterOut(BaseModel):
    message_uuid: str
    label: str
    sender_cvr: str
    recipient_cvr: str
    created_at: datetime
    filename: str
    language: str
    text: str


class MailOut(BaseModel):
    message_id: str
    from_: str = Field(alias="from")
    to: str
    subject: str
    date: datetime | None
    text: str


class SmsOut(BaseModel):
    id: str
    sender: str
    to: str
    text: str
    received_at: datetime
