"""RFC 9457 problem details: the one error format of every HTTP API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # FastAPI only in an API process: a worker raises problems too, but answers none
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://adgang.dk/problems/"
MEDIA_TYPE = "application/problem+json"
# An OpenAPI response entry for a route's documented problems: `responses={404: PROBLEM}`.
PROBLEM: dict[str, Any] = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class Problem(Exception):
    """An error that knows its HTTP status and how to explain itself."""

    status: int = 400
    type_suffix: str = "bad-request"
    title: str = "Bad request"
    # A refusal that keeps what its transaction recorded (a failed try counted, a lock taken):
    # `Database.transaction` commits, then raises it. Set with `.committing()`.
    commits: bool = False

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def committing(self) -> Self:
        """This refusal commits what its transaction recorded before it is raised:
        `raise Unauthenticated("...").committing()` keeps the failed try it refuses."""
        self.commits = True
        return self

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.type_suffix

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class InvalidFields(Problem):
    """422 naming each field that is not valid (`errors`: field, message), as the validation of
    a request body does."""

    status = 422
    type_suffix = "validation-error"
    title = "A field is not valid"


class InvalidField(InvalidFields):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message}])


class NotFound(Problem):
    status = 404
    type_suffix = "not-found"
    title = "Not found"


class Conflict(Problem):
    status = 409
    type_suffix = "conflict"
    title = "Conflict"


class Unauthenticated(Problem):
    status = 401
    type_suffix = "unauthenticated"
    title = "A valid access token is required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="adgang"'})


class Forbidden(Problem):
    status = 403
    type_suffix = "forbidden"
    title = "Not permitted"


class RequestTooLarge(Problem):
    status = 413
    type_suffix = "request-too-large"
    title = "Request body too large"


class TooManyRequests(Problem):
    status = 429
    type_suffix = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


class ServiceUnavailable(Problem):
    """503: something this request needs (the database) cannot be reached now; nothing was
    changed, and the same request may be sent again after `Retry-After` seconds."""

    status = 503
    type_suffix = "service-unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def http_problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Problem:
    """The problem for an error the HTTP framework answers itself (no such path, a method the
    path does not take, an unreadable request), whichever framework serves the port."""
    problem = Problem(detail, headers=headers)
    problem.status = status
    problem.type_suffix = {400: "malformed-request", 404: "not-found", 405: "method-not-allowed"}.get(
        status, "http-error"
    )
    problem.title = {400: "Malformed request", 404: "Not found", 405: "Method not allowed"}.get(status, "HTTP error")
    return problem


def install_problem_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            message = str(err.get("msg", "invalid"))
            message = message.removeprefix("Value error, ")
            errors.append({"field": _field_name(tuple(err.get("loc", ()))), "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(InvalidFields(detail, errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "The request body could not be read: send valid JSON with content-type application/json."
        return problem_response(http_problem(exc.status_code, detail, dict(exc.headers or {})), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem("The server could not complete the request. It has been logged.")
        problem.status, problem.type_suffix, problem.title = (
            500,
            "internal-error",
            "Internal server error",
        )
        return problem_response(problem, request)
