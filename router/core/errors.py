"""The error hierarchy of the pure core.

Every error the core raises for bad input is a `ProtocolError`; the HTTP layer
maps it to a status in one place, so a client never sees a traceback.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A request that the GOPROXY protocol cannot serve.

    `status` is the HTTP status the gateway answers with (400 for a request
    that is not a GOPROXY request at all, 404 for a well-formed request for
    something that cannot exist, so the go command falls back as it would).
    """

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def reason(self) -> str:
        return str(self)


class BadRequestError(ProtocolError):
    """A hostile or malformed request target (traversal, NUL, bad encoding)."""

    status = 400


class ModuleError(ProtocolError):
    """An invalid module path, version or escaping: 404, as the go command expects."""

    status = 404
