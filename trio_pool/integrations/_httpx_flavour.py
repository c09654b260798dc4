"""The classes of one httpx-like package, and how trio_pool's errors map to them.

Theory of operation
-------------------
``httpx`` and ``httpx2`` have the same names for the same things; a :class:`Flavour` holds one
package's ``Response`` class and exception classes, read once when a public adapter module
(``trio_pool.httpx``, ``trio_pool.httpx2``) binds it. A flavour is frozen: nothing changes it
after :meth:`Flavour.of`. Nothing here imports either package.

Errors map to the flavour's classes (:meth:`Flavour.translate`), the trio_pool error as
``__cause__``; anything else (a cancellation, an error of httpx's body iterator) is not given
to it and passes as is. The timeout errors of httpx's own deadlines are chosen by the head
scope (``_httpx_timeouts``), which knows the phase that expired.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Generic, TypeVar

import attrs

import trio_pool

__all__ = ["Flavour"]

R = TypeVar("R", covariant=True)  # a response class: only ever produced


@attrs.frozen
class Flavour(Generic[R]):
    """The classes of one httpx-like package, for :class:`TransportCore`.

    ``response`` builds the package's ``Response(status_code, headers=, stream=,
    extensions=)``; the rest are its exception classes, all called as ``cls(message)``.
    """

    response: Callable[..., R]
    request_not_read: type[Exception]
    connect_error: type[Exception]
    connect_timeout: type[Exception]
    read_timeout: type[Exception]
    write_timeout: type[Exception]
    pool_timeout: type[Exception]
    read_error: type[Exception]
    write_error: type[Exception]
    local_protocol_error: type[Exception]
    remote_protocol_error: type[Exception]
    proxy_error: type[Exception]
    transport_error: type[Exception]

    @classmethod
    def of(cls, package: ModuleType) -> Flavour[R]:
        """The flavour of ``package`` (``httpx`` or ``httpx2``: the same names in both)."""
        return cls(
            response=package.Response,
            request_not_read=package.RequestNotRead,
            connect_error=package.ConnectError,
            connect_timeout=package.ConnectTimeout,
            read_timeout=package.ReadTimeout,
            write_timeout=package.WriteTimeout,
            pool_timeout=package.PoolTimeout,
            read_error=package.ReadError,
            write_error=package.WriteError,
            local_protocol_error=package.LocalProtocolError,
            remote_protocol_error=package.RemoteProtocolError,
            proxy_error=package.ProxyError,
            transport_error=package.TransportError,
        )

    def translate(self, error: trio_pool.TrioPoolError, *, writing: bool) -> Exception:
        """The httpx error for a trio_pool one (``writing``: the request body was being
        written, so a dropped connection is a write error)."""
        cls: type[Exception]
        proxy_error = getattr(trio_pool, "ProxyError", None)  # once ProxyAgent brings it
        if proxy_error is not None and isinstance(error, proxy_error):
            cls = self.proxy_error
        elif isinstance(error, trio_pool.ConnectTimeoutError):  # (before its base class)
            cls = self.connect_timeout
        elif isinstance(error, trio_pool.ConnectError):
            cls = self.connect_error
        elif isinstance(error, trio_pool.HeadersTimeoutError | trio_pool.BodyTimeoutError):
            cls = self.read_timeout
        elif isinstance(error, trio_pool.SocketError | trio_pool.RequestAbortedError):
            cls = self.write_error if writing else self.read_error
        elif isinstance(
            error,
            trio_pool.HTTPParserError
            | trio_pool.HeadersOverflowError
            | trio_pool.ResponseContentLengthMismatchError
            | trio_pool.InformationalError,
        ):
            cls = self.remote_protocol_error
        elif isinstance(
            error, trio_pool.InvalidArgumentError | trio_pool.RequestContentLengthMismatchError
        ):
            # A request trio_pool refuses to send (nothing was sent): another origin than a
            # one-origin dispatcher's, a forbidden header, a body shorter than announced.
            cls = self.local_protocol_error
        elif isinstance(error, trio_pool.ResponseExceededMaxSizeError):
            cls = self.read_error
        else:  # closed or destroyed dispatcher, a missing upstream, anything newer
            cls = self.transport_error
        translated = cls(str(error) or type(error).__name__)
        translated.__cause__ = error
        return translated
