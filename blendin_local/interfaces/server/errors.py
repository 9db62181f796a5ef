"""OpenAI's error shape, shared by the request checks, the worker and the app."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

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
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error body; a 503 also says when to retry (OpenAI clients honour Retry-After)."""
    headers = {**({"Retry-After": "1"} if status == 503 else {}), **(headers or {})}
    return JSONResponse(
        {"error": {"message": as_text(message), "type": type_, "param": as_text(param), "code": code}},
        status_code=status,
        headers=headers or None,
    )


def shown(value: Any) -> str:
    """A request's value quoted for a one-line message, cut if long."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def generation_stopped() -> ApiError:
    """A generation that a stopping server ended."""
    return ApiError(503, "the generation was stopped: the server is stopping", type_="server_error")
