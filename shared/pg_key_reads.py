"""`Database.read_by_key` on PostgreSQL: one statement by key, for what runs on every request
(billing's revocation check, S12), with as little between the request and the server as
SQLAlchemy's own execution of it allows to keep its meaning.

Through the engine a read cost ~0.5 ms CPU: a pool checkout with its ping (`BEGIN`, `;`,
`ROLLBACK`), `BEGIN`, the statement, `ROLLBACK` on giving the connection back, each a trip to
the server and a greenlet switch, plus SQLAlchemy's cache key and result rows. Here a statement
is compiled once for the engine's dialect and run on a few asyncpg connections of its own, in
autocommit: one trip, one statement, one snapshot of what was committed before it (PostgreSQL
runs a lone statement in a transaction of its own), prepared once per connection (asyncpg's
statement cache). What SQLAlchemy does with a statement's values and rows is done alike: its
bind and result processors of the dialect, the same codecs on each connection (JSON, JSONB),
and its errors (`sqlalchemy.exc.DBAPIError` and subclasses, around the driver's) — so a
server that is away still makes an API answer 503 (`shared.web`). The connections only read
(`default_transaction_read_only`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NoReturn

import asyncpg
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import Compiled

# SQLAlchemy's own arguments of its asyncpg adapter, not asyncpg's.
_ADAPTER_ARGUMENTS = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback")

_STATEMENTS_KEPT = 64  # statements are module constants (billing's `REVOCATIONS`); a bound all the same


@dataclass
class _Statement:
    """A statement compiled for the dialect: its SQL with `$n` placeholders and its parameters'
    names in their order, and what SQLAlchemy does to each value (bind processors) and to each
    column of its rows (result processors, known once the server described the columns)."""

    statement: Executable  # kept, so that its id() is not reused while it is cached
    compiled: Any  # the dialect's SQLCompiler
    sql: str
    names: tuple[str, ...]
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: list[Callable[[Any], Any] | None] | None = None
    processes_rows: bool = field(default=False)

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        """The values in the statement's order: the caller's, and those the statement carries
        (a `literal`); SQLAlchemy's error for one missing."""
        values = self.compiled.construct_params(parameters)
        if not self.bind_processors:
            return [values[name] for name in self.names]
        processors = self.bind_processors
        return [
            values[name] if (process := processors.get(name)) is None else process(values[name])
            for name in self.names
        ]

    def rows(self, records: Sequence[asyncpg.Record]) -> list[tuple[Any, ...]]:
        if not self.processes_rows:
            return [tuple(record) for record in records]
        processors = self.result_processors or []
        return [
            tuple(
                value if process is None else process(value)
                for value, process in zip(record, processors, strict=True)
            )
            for record in records
        ]


class KeyReads:
    """At most `size` asyncpg connections of one engine's database, opened when needed and
    kept (the newest given back is the next taken), for single statements in autocommit.

    A connection the server closed (a restart, `pg_terminate_backend`) is left behind, and
    with it every connection kept from before: a statement that failed because its kept
    connection was gone runs once more on a new one, as the engine's pool re-connects after
    its ping (`pool_pre_ping`). A statement cancelled while it runs ends its connection
    (the server stops the statement when the connection goes), so no connection is given back
    in the middle of a statement. A statement that waits for a connection longer than
    `timeout` fails with SQLAlchemy's pool timeout."""

    def __init__(self, engine: AsyncEngine, *, size: int = 4, timeout: float = 30.0) -> None:
        self._dialect: Any = engine.dialect
        _, arguments = self._dialect.create_connect_args(engine.url)
        for name in _ADAPTER_ARGUMENTS:
            arguments.pop(name, None)
        arguments["server_settings"] = {
            **arguments.get("server_settings", {}),
            "default_transaction_read_only": "on",
        }
        self._connect_arguments = arguments
        self._size, self._timeout = size, timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[asyncpg.Connection] = []
        self._generation = 0  # `close` starts a new one: connections of an older one are not kept
        self._statements: dict[int, _Statement] = {}

    async def read(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> list[tuple[Any, ...]] | None:
        """The rows of `statement`, each a tuple in the order of its columns; None for a
        statement that has to be expanded per call (`IN` of a list): the caller runs it the
        usual way."""
        compiled = self._statements.get(id(statement))
        if compiled is None or compiled.statement is not statement:
            compiled = self._compile(statement)
            if compiled is None:
                return None
        arguments = compiled.arguments(parameters)
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise exc.TimeoutError(
                    f"no connection of the {self._size} for reads by key within {self._timeout:.0f} s"
                ) from None
        else:
            await self._slots.acquire()
        try:
            return await self._run(compiled, arguments)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Close the kept connections; those in use are closed when their statement ends."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._end(connection)

    async def _run(self, compiled: _Statement, arguments: list[Any]) -> list[tuple[Any, ...]]:
        generation = self._generation
        connection = self._kept()
        kept = connection is not None
        while True:
            if connection is None:
                connection = await self._connect()
            try:
                if compiled.result_processors is None:  # the first run: the server describes the columns
                    self._learn_columns(compiled, (await connection.prepare(compiled.sql)).get_attributes())
                records = await connection.fetch(compiled.sql, *arguments)
            except Exception as error:
                if not connection.is_closed():  # the statement failed, the connection is fine
                    self._give_back(connection, generation)
                    self._raise(error, compiled.sql, invalidated=False)
                connection.terminate()
                if kept:  # gone while it was kept: so are the others from before; once more on a new one
                    self._forget_kept()
                    connection, kept = None, False
                    continue
                self._raise(error, compiled.sql, invalidated=True)
            except BaseException:  # cancelled in the middle of the statement
                connection.terminate()
                raise
            self._give_back(connection, generation)
            return compiled.rows(records)

    def _kept(self) -> asyncpg.Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
            connection.terminate()
        return None

    def _give_back(self, connection: asyncpg.Connection, generation: int) -> None:
        if generation == self._generation and not connection.is_closed():
            self._idle.append(connection)
        else:
            connection.terminate()

    def _forget_kept(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.terminate()

    async def _connect(self) -> asyncpg.Connection:
        try:
            connection = await asyncpg.connect(**self._connect_arguments)
        except Exception as error:
            self._raise(error, None, invalidated=False)
        try:
            # The codecs SQLAlchemy's dialect sets on each of its connections (`on_connect`).
            adapted = SimpleNamespace(_connection=connection)
            await self._dialect.setup_asyncpg_json_codec(adapted)
            await self._dialect.setup_asyncpg_jsonb_codec(adapted)
            if self._dialect._native_inet_types is False:
                await self._dialect._disable_asyncpg_inet_codecs(adapted)
        except Exception as error:
            connection.terminate()
            self._raise(error, None, invalidated=True)
        except BaseException:
            connection.terminate()
            raise
        return connection

    async def _end(self, connection: asyncpg.Connection) -> None:
        try:
            await connection.close(timeout=2)
        except Exception:  # noqa: BLE001  # closing what is gone or stuck: drop it
            connection.terminate()

    def _compile(self, statement: Executable) -> _Statement | None:
        compiled: Compiled = statement.compile(dialect=self._dialect)  # type: ignore[attr-defined]
        sql_compiler: Any = compiled
        if sql_compiler.literal_execute_params or sql_compiler.post_compile_params:
            return None  # expanded per call
        if len(self._statements) >= _STATEMENTS_KEPT:
            self._statements.clear()
        entry = _Statement(
            statement,
            sql_compiler,
            sql_compiler.string,
            tuple(sql_compiler.positiontup or ()),
            sql_compiler._bind_processors,
        )
        self._statements[id(statement)] = entry
        return entry

    def _learn_columns(self, compiled: _Statement, attributes: Sequence[Any]) -> None:
        """The result processors of the statement's columns, for the types the server names
        (`cursor.description` in SQLAlchemy's adapter: the type's oid); none for a textual
        statement that declares no columns, as SQLAlchemy does."""
        columns = getattr(compiled.statement, "selected_columns", None)
        if columns is None or len(columns) != len(attributes):
            compiled.result_processors = []
            return
        processors = [
            column.type._cached_result_processor(self._dialect, attribute.type.oid)
            for column, attribute in zip(columns, attributes, strict=True)
        ]
        compiled.result_processors = processors
        compiled.processes_rows = any(processor is not None for processor in processors)

    def _raise(self, error: Exception, sql: str | None, *, invalidated: bool) -> NoReturn:
        """Raise `error` as SQLAlchemy would: asyncpg's own errors as its adapter's DBAPI
        errors (`_handle_exception_no_connection`, also what a failed connect raises there),
        wrapped in `sqlalchemy.exc.DBAPIError` with the parameters hidden; the others (OSError,
        the connect's TimeoutError) as they are."""
        dbapi = self._dialect.loaded_dbapi
        try:
            AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
        except dbapi.Error as adapted:
            wrapped = exc.DBAPIError.instance(
                sql,
                None,
                adapted,
                dbapi.Error,
                hide_parameters=True,
                connection_invalidated=invalidated,
                dialect=self._dialect,
                ismulti=False,
            )
            raise wrapped from adapted
        raise error  # not reached: the adapter raises what it was given when it does not adapt it
