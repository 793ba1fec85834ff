"""The one exception tree of clawlan.

Every error a user can cause (a bad flag, config file, model file or HTTP
body) is a :class:`ClawlanError`. Its ``str()`` is a single line naming what
is wrong and how to fix it; the CLI prints exactly that line and exits
non-zero, and the server turns it into an OpenAI-style JSON error.

    ClawlanError
    ├── ConfigError            a config file, environment variable or flag
    ├── ModelError             a model file or the embedded model
    │   ├── ModelFileError     missing, unreadable, truncated, not GGUF
    │   ├── ChecksumError      sha256 does not match
    │   └── DiskSpaceError     not enough disk to assemble the model
    ├── EngineError            the inference engine failed
    └── RequestError           an HTTP request that cannot be served
        ├── InvalidRequest     400: a malformed body or a bad field
        ├── ContextLengthExceeded  400: prompt + output beyond the context
        ├── AuthenticationError    401
        ├── Overloaded             503: past max_connections
        └── RequestTimeout         504: no progress within timeout_ms
"""

from __future__ import annotations


class ClawlanError(Exception):
    """Base of every error clawlan raises on purpose."""


class ConfigError(ClawlanError):
    """A config file, environment variable or flag holds a bad value."""


class ModelError(ClawlanError):
    """The model cannot be used."""


class ModelFileError(ModelError):
    """The model file is missing, unreadable, truncated or not GGUF."""


class ChecksumError(ModelError):
    """The model file's sha256 does not match the expected one."""


class DiskSpaceError(ModelError):
    """There is not enough free disk to write the model."""


class EngineError(ClawlanError):
    """The inference engine failed (llama.cpp returned an error)."""


def error_body(message: str, code: str | None, error_type: str = "server_error", param: str | None = None) -> dict:
    """The body OpenAI's API sends for an error: one shape for every refusal, JSON or SSE."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class RequestError(ClawlanError):
    """An API request that cannot be served; maps onto an HTTP status."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict:
        """The body OpenAI's API sends for an error."""
        return error_body(self.message, self.code, self.error_type, self.param)


class InvalidRequest(RequestError):
    code = "invalid_request"


class ContextLengthExceeded(RequestError):
    code = "context_length_exceeded"


class PayloadTooLarge(RequestError):
    status_code = 413
    code = "request_too_large"


class BodyTimeout(RequestError):
    status_code = 408
    code = "request_timeout"


class AuthenticationError(RequestError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFound(RequestError):
    status_code = 404
    code = "not_found"


class Overloaded(RequestError):
    status_code = 503
    error_type = "server_error"
    code = "server_overloaded"


class RequestTimeout(RequestError):
    status_code = 504
    error_type = "server_error"
    code = "timeout"
