"""Settings of telephony subscriptions and of Personligt Nummer (S11), validated as a whole.

Telephony (mobile and fixed lines): call forwarding (always, when busy, on no answer, or busy
or no answer) to a Danish number, voicemail, and which number callers see. Personligt Nummer
(one number that rings on the phones its user chooses): the member phones, whether they ring
at once or one after another, and the opening hours; outside them calls go to voicemail, are
refused as busy, or are forwarded.
"""

from __future__ import annotations

from datetime import time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.billing.catalogue import TELEPHONY_KINDS
from shared.validation import DanishPhone

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CallForwarding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["off", "always", "busy", "no_answer", "busy_or_no_answer"] = "off"
    target: DanishPhone | None = Field(default=None, max_length=20, description="Danish number, E.164")
    no_answer_seconds: int = Field(default=20, ge=5, le=60, description="Ring this long before forwarding")

    @model_validator(mode="after")
    def _target_when_forwarding(self) -> CallForwarding:
        if self.mode != "off" and self.target is None:
            raise ValueError("a forwarding target number is required unless mode is 'off'")
        return self


class Voicemail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    notify_by_sms: bool = True


class CallerId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    presentation: Literal["own_number", "main_number", "hidden"] = "own_number"
    main_number: DanishPhone | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _main_number_when_shown(self) -> CallerId:
        if self.presentation == "main_number" and self.main_number is None:
            raise ValueError("main_number is required when presentation is 'main_number'")
        return self


class TelephonySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_forwarding: CallForwarding = Field(default_factory=CallForwarding)
    voicemail: Voicemail = Field(default_factory=Voicemail)
    caller_id: CallerId = Field(default_factory=CallerId)


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: DanishPhone = Field(max_length=20)
    label: str = Field(default="", max_length=60)


class OpeningHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: list[Weekday] = Field(min_length=1, max_length=7)
    opens: time
    closes: time

    @field_validator("days")
    @classmethod
    def _no_repeated_days(cls, days: list[str]) -> list[str]:
        if len(set(days)) != len(days):
            raise ValueError("a day is listed twice")
        return sorted(days, key=WEEKDAYS.index)

    @field_validator("opens", "closes")
    @classmethod
    def _local_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give the local Danish time without an offset, e.g. 08:00")
        return value

    @field_validator("closes")
    @classmethod
    def _closes_after_opening(cls, closes: time, info: ValidationInfo) -> time:
        # On `closes` (not the whole interval), so the error names the field to correct.
        opens = info.data.get("opens")
        if opens is not None and closes <= opens:
            raise ValueError("closes must be after opens (an interval within one day)")
        return closes


class PersonalNumberSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[Member] = Field(default_factory=list, max_length=10)
    ring_strategy: Literal["simultaneous", "in_order"] = "simultaneous"
    ring_seconds_per_member: int = Field(
        default=15, ge=5, le=60, description="For in_order: ring each this long"
    )
    schedule: list[OpeningHours] = Field(
        default_factory=list, max_length=21, description="Opening hours; empty means always open"
    )
    outside_hours: Literal["voicemail", "busy", "forward"] = "voicemail"
    outside_hours_target: DanishPhone | None = Field(default=None, max_length=20)

    @field_validator("members")
    @classmethod
    def _distinct_members(cls, members: list[Member]) -> list[Member]:
        numbers = [m.number for m in members]
        if len(set(numbers)) != len(numbers):
            raise ValueError("a phone number is a member twice")
        return members

    def rule_errors(self) -> list[dict[str, str]]:
        """The rules across fields, each error naming the field to correct (a validator of the
        model could only name the whole list, or no field): an interval that overlaps an
        earlier one on a day is `schedule.<its index>`, a missing forwarding target
        `outside_hours_target`."""
        errors = []
        overlapping: set[int] = set()
        for day in WEEKDAYS:
            intervals = sorted(
                (h.opens, h.closes, index) for index, h in enumerate(self.schedule) if day in h.days
            )
            for (opens, closes, _), (later_opens, later_closes, later) in zip(
                intervals, intervals[1:], strict=False
            ):
                if later_opens < closes and later not in overlapping:
                    overlapping.add(later)
                    errors.append(
                        {
                            "field": f"schedule.{later}",
                            "message": f"opening hours overlap on {day}: {opens:%H:%M}–{closes:%H:%M} "
                            f"and {later_opens:%H:%M}–{later_closes:%H:%M}",
                        }
                    )
        if self.outside_hours == "forward" and self.outside_hours_target is None:
            errors.append(
                {
                    "field": "outside_hours_target",
                    "message": "a number is required when outside_hours is 'forward'",
                }
            )
        return errors


class SettingsError(ValueError):
    """Settings that are not valid: `errors` name each field as problem+json `errors`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def settings_model(kind: str) -> type[BaseModel] | None:
    if kind in TELEPHONY_KINDS:
        return TelephonySettings
    if kind == "personal_number":
        return PersonalNumberSettings
    return None


def effective_settings(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
    model = settings_model(kind)
    return model.model_validate(stored).model_dump(mode="json") if model else {}


def merged_settings(
    kind: str, stored: dict[str, Any], patch: dict[str, Any], own_number: str
) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7396) to the stored settings and validate the result."""
    model = settings_model(kind)
    if model is None:
        raise SettingsError(
            [{"field": "body", "message": f"a {kind} subscription has no telephony settings"}]
        )
    merged = _merge(effective_settings(kind, stored), patch)
    try:
        result = model.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(
            [
                {
                    "field": ".".join(str(p) for p in err["loc"]) or "body",
                    "message": str(err["msg"]).removeprefix("Value error, "),
                }
                for err in exc.errors()
            ]
        ) from None
    if isinstance(result, TelephonySettings) and result.call_forwarding.target == own_number:
        raise SettingsError(
            [{"field": "call_forwarding.target", "message": "a line cannot forward to itself"}]
        )
    if isinstance(result, PersonalNumberSettings):
        if errors := result.rule_errors():
            raise SettingsError(errors)
        if any(m.number == own_number for m in result.members):
            raise SettingsError([{"field": "members", "message": "the personal number cannot ring itself"}])
        if result.outside_hours_target == own_number:
            raise SettingsError(
                [{"field": "outside_hours_target", "message": "cannot forward to the number itself"}]
            )
    return result.model_dump(mode="json")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result
