"""Keyset paging of billing's lists: a cursor is the (date or time, id) of a page's last row,
and the next page starts after it, newest first (S8, S9)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy import tuple_

from shared.problems import InvalidField

T = TypeVar("T")


def encode_cursor(day: date | datetime, row_id: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps([day.isoformat(), row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, id_type: type, key_type: type[date] = date) -> tuple[Any, Any]:
    """The (date or time, id) of the last row of a page, as `encode_cursor` gave it out."""
    key: Any = None
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, row_id = key_type.fromisoformat(raw[0]), raw[1]
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        row_id = None
    if isinstance(key, datetime):
        key = key.astimezone(UTC) if key.tzinfo else None
    valid = key is not None and (
        isinstance(row_id, str)
        and id_type is str
        and len(row_id) <= 36
        or type(row_id) is int
        and id_type is int
        and 0 < row_id < 2**63
    )
    if not valid:
        raise InvalidField("cursor", "is not a cursor this API gave out; start again without one")
    return key, row_id


def newest_first(
    query: Any, key_column: Any, id_column: Any, *, after: tuple[Any, Any] | None, limit: int
) -> Any:
    """`query` ordered newest first (by `key_column`, ties by id), from after the last row of
    the previous page, `limit` rows. The cursor is part of the index search (keyset paging)."""
    if after is not None:
        query = query.where(tuple_(key_column, id_column) < tuple_(*after))
    return query.order_by(key_column.desc(), id_column.desc()).limit(limit)


def cut(rows: Sequence[T], limit: int, key: Callable[[T], tuple[Any, Any]]) -> tuple[list[T], str | None]:
    """A page of `rows` (fetched one longer than `limit`) and the cursor to the next, if any."""
    page = list(rows[:limit])
    return page, encode_cursor(*key(page[-1])) if len(rows) > limit else None


def check_period(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidField("from", "must not be after 'to'")
