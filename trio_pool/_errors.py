"""Every exception trio_pool raises.

All of them derive from :class:`TrioPoolError`, so ``except trio_pool.TrioPoolError`` catches
anything the library itself raises. The three HTTP timeout errors and the two resource-pool
timeout errors also derive from :class:`trio.TooSlowError`, so code that already handles Trio's
own ``fail_after`` handles them too.

Each docstring says when the error is raised and how it differs from its neighbours.
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Protocol

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "AcquireTimeoutError",
    "BalancedPoolMissingUpstreamError",
    "BodyTimeoutError",
    "ClientClosedError",
    "ClientDestroyedError",
    "ConnectError",
    "ConnectTimeoutError",
    "HTTPParserError",
    "HeadersOverflowError",
    "HeadersTimeoutError",
    "InformationalError",
    "InvalidArgumentError",
    "MaxOriginsReachedError",
    "NoCapablePoolError",
    "PoolBailedError",
    "PoolDestroyedError",
    "PoolEndingError",
    "PoolFullError",
    "ProxyError",
    "RequestAbortedError",
    "RequestContentLengthMismatchError",
    "RequestTimeoutError",
    "ResponseContentLengthMismatchError",
    "ResponseDecodeError",
    "ResponseExceededMaxSizeError",
    "ResponseStatusError",
    "SocketError",
    "TooManyRedirectsError",
    "TrioPoolError",
]


class _HasStatus(Protocol):
    """What :class:`ResponseStatusError` needs of a response."""

    @property
    def status(self) -> int: ...


class TrioPoolError(Exception):
    """Base class of every error trio_pool raises."""


class InvalidArgumentError(TrioPoolError, ValueError):
    """An argument is out of its domain; raised at construction or call time.

    The message names the argument. Also a :class:`ValueError`, so generic validation code
    catches it. Raising it never changes the state of the object it was raised by.
    """


# --------------------------------------------------------------------------- HTTP lifecycle


class ClientClosedError(TrioPoolError):
    """A request was made after ``close()`` began (or after the ``async with`` block ended).

    Work accepted before ``close()`` still completes; only new work is refused.
    """


class ClientDestroyedError(TrioPoolError):
    """The dispatcher was destroyed: outstanding requests are aborted with this error.

    Also raised by requests made after ``destroy()`` and by ``close()`` after ``destroy()``.
    """


# --------------------------------------------------------------------------- HTTP connect


class ConnectError(TrioPoolError):
    """The TCP or TLS connection to the origin could not be established.

    ``__cause__`` is the underlying :class:`OSError` (refused, unreachable, DNS) or
    :class:`ssl.SSLError` (handshake or certificate verification) itself, dug out of Trio's
    wrappers (see :func:`root_cause`), and the message names it (``Connection refused``).
    """


class ConnectTimeoutError(ConnectError, trio.TooSlowError):
    """Connecting (TCP + TLS) took longer than ``connect_timeout``.

    A :class:`ConnectError` too, since the request failed before anything was sent.
    """


class ProxyError(ConnectError):
    """The proxy of a ``ProxyAgent`` refused or failed: it answered a ``CONNECT`` with a
    status other than 2xx (``407`` proxy authentication required, ``403``, ``5xx``), or it
    could not be reached at all (then :attr:`status` is None and ``__cause__`` says why).

    A :class:`ConnectError`: nothing of the request was sent to the target. The message
    names the proxy by host and port only, never by its credentials.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- HTTP exchange


class HeadersTimeoutError(TrioPoolError, trio.TooSlowError):
    """The response headers did not arrive within ``headers_timeout`` of the request being sent."""


class BodyTimeoutError(TrioPoolError, trio.TooSlowError):
    """No response body data arrived for ``body_timeout`` seconds (an idle gap, not a total)."""


class HeadersOverflowError(TrioPoolError):
    """The response headers exceeded ``max_header_size`` bytes."""


class ResponseExceededMaxSizeError(TrioPoolError):
    """The response body exceeded ``max_response_size`` bytes."""


class RequestContentLengthMismatchError(TrioPoolError):
    """The request body's length differs from its ``content-length`` header.

    Raised only when ``strict_content_length`` is on (the default).
    """


class ResponseContentLengthMismatchError(TrioPoolError):
    """The server closed the response body before ``content-length`` bytes arrived."""


class SocketError(TrioPoolError):
    """The connection broke (reset, closed by the server, write failed) during an exchange.

    ``__cause__`` is the underlying error. Differs from :class:`ConnectError`: the connection
    had been established.
    """


class InformationalError(TrioPoolError):
    """Not a failure of a request: passed to ``"disconnect"`` listeners to say why a
    connection was closed normally (for example ``"socket idle timeout"``)."""


class HTTPParserError(TrioPoolError):
    """The server violated HTTP/1.1 (malformed status line, headers or framing)."""


class RequestAbortedError(TrioPoolError):
    """The request was ended before its response did: by its ``dispatch`` handler
    (``controller.abort(reason)``, or an exception ``on_request_start`` raised;
    ``__cause__`` holds the reason when it is an exception), by its caller's cancellation
    (what the handler's ``on_response_error`` then receives), or by leaving a ``stream()``
    block before the body's end (what reading that body afterwards raises)."""


class ResponseDecodeError(TrioPoolError):
    """``text()`` or ``json()`` of a response whose body is still in its ``content-encoding``
    (gzip, br...): nothing decoded it. The message names the encoding and
    ``interceptors.decompress()``, which decodes it. ``body`` stays available as bytes."""


class ResponseStatusError(TrioPoolError):
    """Raised by ``Response.raise_for_status()`` for a 4xx or 5xx status; the message says
    the method, the URL and the status (``GET http://h/x: 503 Service Unavailable``).

    Attributes:
        response: the :class:`~trio_pool.Response` that carried the status.
    """

    def __init__(self, message: str, response: _HasStatus) -> None:
        super().__init__(message)
        self.response = response

    @property
    def status(self) -> int:
        """The HTTP status code of :attr:`response`."""
        return self.response.status


class BalancedPoolMissingUpstreamError(TrioPoolError):
    """A ``BalancedPool`` has no upstream that can take the request: none at all, or none with
    the requested capability (the message names it)."""


class MaxOriginsReachedError(TrioPoolError):
    """An ``Agent`` already has ``max_origins`` origins with a live pool, and a request names
    one more. Requests to the origins it has still go through."""


class TooManyRedirectsError(TrioPoolError):
    """``interceptors.redirect()`` got one more redirect than ``max_redirections`` allows.

    The message names the limit and the last ``Location``; the redirect response that
    went over it was discarded (its connection drained or closed).
    """


# --------------------------------------------------------------------------- resource pools


class PoolFullError(TrioPoolError):
    """``max_requests`` acquirers are already waiting, so this one is refused at once."""


class PoolEndingError(TrioPoolError):
    """``end()`` has begun: the pool refuses new acquires while it winds down."""


class PoolDestroyedError(TrioPoolError):
    """The pool has shut down completely (``end()`` finished or the block was left)."""


class RequestTimeoutError(TrioPoolError, trio.TooSlowError):
    """An acquirer waited ``request_timeout`` seconds without getting a resource.

    The pool itself is unaffected; differs from :class:`AcquireTimeoutError`, which is about
    creating one resource.
    """


class AcquireTimeoutError(TrioPoolError, trio.TooSlowError):
    """Creating one resource (``acquire``/``open``) took longer than ``acquire_timeout``.

    The pool retries on its backoff schedule, so acquirers do not see this error directly:
    it is the ``__cause__`` of :class:`PoolBailedError` when the last attempt timed out.
    """


class PoolBailedError(TrioPoolError):
    """No allocation ever succeeded within ``bail_after`` seconds, so the pool gave up.

    Every waiting and later acquire raises it. ``__cause__`` is the last allocation error.
    """


class NoCapablePoolError(TrioPoolError):
    """A ``Cluster`` has no pool with the requested capability (the message names it)."""


# --------------------------------------------------------------------------- causes


def root_cause(error: BaseException) -> BaseException:
    """The error that explains ``error``: the first :class:`ssl.SSLError` or
    :class:`OSError` with an errno inside it (through ``__cause__`` chains and exception
    groups: Trio reports every failed address of ``open_tcp_stream`` in a group under an
    ``OSError("all attempts to connect ... failed")``, and a TLS failure as a
    ``BrokenResourceError`` caused by the ``SSLError``), else ``error`` itself."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        if isinstance(current, OSError) and (current.errno is not None or current.strerror):
            return current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        if current.__cause__ is not None:
            todo.append(current.__cause__)
    return error


def describe_cause(error: BaseException) -> str:
    """A short message for :func:`root_cause`'s result (``Connection refused``,
    ``Name or service not known``, the TLS verification failure)."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"TLS certificate verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {error.reason or error}"
    if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)  # Trio's strerror also names the address tried
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # getaddrinfo's (its errno is a negative EAI_ code)
    return str(error) or type(error).__name__


def connect_error(target: str, error: BaseException) -> ConnectError:
    """The :class:`ConnectError` for failing to connect to ``target`` with ``error``: its
    message names the root cause and its ``__cause__`` is that error (raise it as is)."""
    cause = root_cause(error)
    connect = ConnectError(f"cannot connect to {target}: {describe_cause(cause)}")
    connect.__cause__ = cause  # also suppresses the context: the cause says it all
    return connect
