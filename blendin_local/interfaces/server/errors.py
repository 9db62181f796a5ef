"""OpenAI's error shape, shared by the request checks, the worker and the app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

SHOWN_CHARS = 60  # of a request's value quoted in an error message


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


def as_text(value: str | None) -> str | None:
    """`value` with any lone surrogate written as an escape: an error may quote a request."""
    return None if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error body; a 503 also says when to retry (OpenAI clients honour Retry-After)."""
    headers = {**({"Retry-After": "1"} if status == 503 else {}), **(headers or {})}
    return JSONResponse(
        {"error": {"message": as_text(message), "type": type_, "param": as_text(param), "code": code}},
        status_code=status,
        headers=headers or None,
    )


class ErrorDetail(BaseModel):
    message: str
    type: str  # invalid_request_error, or server_error
    param: str | None  # the request field at fault, where there is one
    code: str | None


class ErrorBody(BaseModel):
    """Every error this server answers, in OpenAI's shape."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "The request is invalid: the message says why and param names the field.",
    401: "The server was started with --api-key and the request has no or a wrong Authorization: Bearer key.",
    403: "The Host header is not a name of this server (--host and --cors-origin add names).",
    404: "No such model (code model_not_found) or endpoint.",
    413: "The body is larger than --max-request-bytes (code request_too_large).",
    500: "The generation failed inside the models.",
    503: "The queue is full, or the server is starting or stopping: retry after Retry-After seconds.",
}


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, for its OpenAPI description."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


def shown(value: Any) -> str:
    """A request's value quoted for a one-line message, cut if long."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def generation_stopped() -> ApiError:
    """A generation that a stopping server ended."""
    return ApiError(503, "the generation was stopped: the server is stopping", type_="server_error")
