"""The service's client errors and their JSON form ``{"code", "message"}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["RequestError", "error_response"]


class RequestError(Exception):
    """A client error answered as ``{"code", "message"}`` with ``status`` (the hosted
    API's code names where one fits)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, close: bool = False) -> JSONResponse:
    """The JSON answer of an error; ``close`` ends the connection after it."""
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)
