"""What every topic and event is: `Topic`, the `Event` base and the registry of event types.

An event names its topic family by its base class; the family states the topic and the field
that keys it, and the event gets the rest from them (`Event` says how).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Cvr = Annotated[str, Field(pattern=r"^[0-9]{8}$", description="Danish CVR number, 8 digits")]
Function = Literal["invoices", "orders", "master_data", "telephony", "user_admin"]
ALL_FUNCTIONS: tuple[Function, ...] = (
    "invoices",
    "orders",
    "master_data",
    "telephony",
    "user_admin",
)
Language = Literal["da", "en"]


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    description: str
    compacted: bool = False  # a registry: the newest event per key is the state

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def service(self) -> str:
        """The service that publishes on the topic: the first part of its name."""
        return self.name.split(".", 1)[0]


# Every event type, by its CloudEvents type; filled as the event classes are declared.
EVENT_TYPES: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base of every payload. `TYPE` is the CloudEvents type, `TOPIC` where it is published.

    A topic family is a direct subclass that states the topic and the field that keys it:

        class _BillingOrders(Event):
            TOPIC = BILLING_ORDERS
            KEY_FIELD = "cvr"

    and each event of the topic subclasses the family. The event's `SOURCE` is the topic's
    service (`/adgang/billing`) and its `TYPE` is `dk.adgang.<service>.<ClassName>.v1`. An event
    may state another key field (`KEY_FIELD`), another name in its type (`TYPE_NAME`) or a later
    version (`VERSION`); one whose key is no single field overrides `key()`. Declaring an event
    registers its type in `EVENT_TYPES`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    TOPIC: ClassVar[Topic]
    SOURCE: ClassVar[str]
    KEY_FIELD: ClassVar[str | None] = None
    TYPE_NAME: ClassVar[str | None] = None
    VERSION: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Derives a family's source, and an event's type, and registers the event (pydantic's
        `__init_subclass__`, called once the fields are known)."""
        super().__pydantic_init_subclass__(**kwargs)
        own = vars(cls)
        if "TYPE" in own or "SOURCE" in own:
            raise TypeError(f"{cls.__name__}: TYPE and SOURCE are derived from the topic family")
        if "TOPIC" in own:  # a topic family: its subclasses are the events
            if "TYPE_NAME" in own or "VERSION" in own:
                raise TypeError(f"{cls.__name__}: a topic family has no type name or version")
            cls.SOURCE = f"/adgang/{cls.TOPIC.service}"
            return
        if not hasattr(cls, "SOURCE"):
            raise TypeError(f"{cls.__name__} belongs to no topic family")
        name = own.get("TYPE_NAME") or cls.__name__
        cls.TYPE = f"dk.adgang.{cls.TOPIC.service}.{name}.v{own.get('VERSION', 1)}"
        if cls.KEY_FIELD is None and cls.key is Event.key:
            raise TypeError(f"{cls.__name__} has no key: state KEY_FIELD or override key()")
        if cls.KEY_FIELD is not None and cls.KEY_FIELD not in cls.model_fields:
            raise TypeError(f"{cls.__name__} has no field {cls.KEY_FIELD!r} to key it by")
        if cls.TYPE in EVENT_TYPES:
            raise TypeError(f"{cls.__name__}: {cls.TYPE} is {EVENT_TYPES[cls.TYPE].__name__}'s type")
        EVENT_TYPES[cls.TYPE] = cls

    def key(self) -> str:
        """The Kafka key: the value of the key field, so one aggregate's events stay in order."""
        if self.KEY_FIELD is None:
            raise NotImplementedError
        return str(getattr(self, self.KEY_FIELD))

    def subject(self) -> str:
        return self.key()
