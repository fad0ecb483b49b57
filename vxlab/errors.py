"""Errors of the vxlab core, one class per gRPC status they map to.

The core raises these; the gRPC servicer and the CLI translate them (INVALID_ARGUMENT
naming the field and the reason, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED). Nothing here imports gRPC.
"""

from __future__ import annotations


class VxError(Exception):
    """Base class; `code` is the gRPC status name the error maps to."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VxError):
    """A request field is malformed; the message names the field and the reason."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(VxError):
    code = "NOT_FOUND"


class AlreadyExists(VxError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(VxError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(VxError):
    """A pool ran dry: no free subnet, VNI, address or MAC."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(VxError):
    """The store (etcd) cannot be reached; retry later."""

    code = "UNAVAILABLE"


class Aborted(VxError):
    """A transaction kept conflicting past the retry budget."""

    code = "ABORTED"


class Unauthenticated(VxError):
    """The peer could not prove who it is: no client certificate, a foreign CA, a
    failed TLS handshake."""

    code = "UNAUTHENTICATED"


class PermissionDenied(VxError):
    """The caller is known but may not do this; the message names the field."""

    code = "PERMISSION_DENIED"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
