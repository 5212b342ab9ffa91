"""The one error hierarchy of knflow: each error knows the HTTP status and retryability the edge needs."""

from __future__ import annotations


class KnflowError(Exception):
    """Base of every error knflow raises on purpose.

    ``status`` is the HTTP status a server answers with; ``retryable`` tells delivery
    whether trying the same thing again may succeed.
    """

    status: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class ConfigError(KnflowError):
    """A setting has a value knflow cannot use; the message names the setting and the accepted forms."""

    status = 500


class InvalidRequest(KnflowError):
    """The caller sent something malformed (a bad event, a bad key, a bad tensor)."""

    status = 400


class NotFound(KnflowError):
    """The named object, model, function or route does not exist."""

    status = 404


class Conflict(KnflowError):
    """The request conflicts with the current state (a name that is taken, a change that is not allowed)."""

    status = 409


class PayloadTooLarge(KnflowError):
    """A request body or event is above the configured size limit."""

    status = 413


class Unavailable(KnflowError):
    """A dependency is down or overloaded for now; trying again later may succeed."""

    status = 503
    retryable = True


class IntegrityError(KnflowError):
    """Stored bytes do not match the sha256 recorded when they were written."""

    status = 500
