"""The one error type users see: :class:`EdgeatlasError`, with a code and a fix.

In the MLflow style there is a single exception class carrying an error code, so
the CLI and the HTTP API can turn any failure into one clear line (CLI) or a JSON
body with a status (API) without a traceback.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable codes. The HTTP API maps them to status codes."""

    INVALID_CONFIG = "INVALID_CONFIG"  # devices.toml, prefs.toml, zoo.toml
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # a bad flag or value
    NOT_FOUND = "NOT_FOUND"  # an unknown board, variant, predictor ...
    ALREADY_EXISTS = "ALREADY_EXISTS"
    STORE_ERROR = "STORE_ERROR"  # database unreachable, migration failed
    BUILD_ERROR = "BUILD_ERROR"  # zoo: export / quantise / split failed
    UNSUPPORTED = "UNSUPPORTED"  # an op or runtime not supported
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"  # too few measurements to fit
    BAD_DATA = "BAD_DATA"  # NaNs, corrupt files, tampered predictors
    INFEASIBLE = "INFEASIBLE"  # no candidate satisfies the constraints
    FLEET_ERROR = "FLEET_ERROR"  # sshd / cgroup / network set-up
    UNAUTHORIZED = "UNAUTHORIZED"
    ENVIRONMENT = "ENVIRONMENT"  # something missing on this machine


HTTP_STATUS = {
    ErrorCode.INVALID_CONFIG: 422,
    ErrorCode.INVALID_ARGUMENT: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.STORE_ERROR: 500,
    ErrorCode.BUILD_ERROR: 500,
    ErrorCode.UNSUPPORTED: 422,
    ErrorCode.INSUFFICIENT_DATA: 409,
    ErrorCode.BAD_DATA: 422,
    ErrorCode.INFEASIBLE: 409,
    ErrorCode.FLEET_ERROR: 503,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.ENVIRONMENT: 500,
}


class EdgeatlasError(Exception):
    """An error a user can act on.

    ``message`` says what is wrong (naming file, line, field where known);
    ``hint`` says how to fix it. ``str(err)`` is one line holding both.
    """

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENT, hint: str | None = None):
        self.message = message
        self.code = ErrorCode(code)
        self.hint = hint
        super().__init__(self.one_line())

    def __reduce__(self):
        # pickled with its fields (an error raised in a worker process keeps its code and hint)
        return (type(self), (self.message, self.code, self.hint))

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (fix: {' '.join(self.hint.split())})"
        return text

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code.value, "message": self.message, "hint": self.hint}
