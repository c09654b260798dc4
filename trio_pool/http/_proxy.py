"""``ProxyAgent`` and ``EnvHttpProxyAgent``: an ``Agent`` whose pools reach origins through a
forward HTTP proxy.

Theory of operation
-------------------
A proxied origin still gets its own ``Pool`` (the agent's machinery is unchanged); what
differs is how that Pool's connections are opened and what its requests look like, both
decided once per origin by :meth:`Proxy.route`:

* ``http`` targets: the connector opens a plain connection to the proxy (TLS to the proxy
  for an ``https://`` proxy), and the Pool writes absolute-form requests
  (``GET http://host/path``, RFC 9112 3.2.2) with the proxy's headers — the internal
  ``proxy_form`` option of ``ClientOptions``. Connections are pooled and kept alive as usual.
* ``https`` targets: the connector opens a connection to the proxy, asks it for a tunnel
  (``CONNECT host:port``, :func:`_tunnel`), then runs TLS to the **target** inside the tunnel
  (its certificate and host name verified with the Pool's ``ssl_context``). One tunnel per
  connection; the Pool sees an ordinary TLS stream.

A proxy that cannot be reached, or answers a ``CONNECT`` with anything but 2xx, fails the
connection with ``ProxyError`` (a ``ConnectError``; the status, if any, on it). Credentials
in the proxy URL become a ``proxy-authorization: Basic`` header, held only in fields that
no repr shows; messages and logs name the proxy by origin only.

``EnvHttpProxyAgent`` reads the environment once, at construction, and routes each origin
directly or through the proxy for its scheme (``NO_PROXY``: ``_noproxy.py``).
"""

from __future__ import annotations

import base64
import os
import ssl
from typing import TYPE_CHECKING, Any, final
from urllib.parse import unquote, urlsplit

import attrs
import h11
import trio

from .._errors import ConnectError, ConnectTimeoutError, InvalidArgumentError, ProxyError
from ._agent import AgentBase
from ._noproxy import NoProxy
from ._options import ClientOptions
from ._origin import Origin, parse_origin
from ._prepare import _header_pairs
from ._tls import start_tls
from ._transport import default_ssl_context, open_stream

if TYPE_CHECKING:
    from ._models import HeadersType
    from ._transport import Connector

__all__ = ["EnvHttpProxyAgent", "Proxy", "ProxyAgent"]

_HEAD_LIMIT = 65536  # a CONNECT answer's head; a proxy that says more is not one


@attrs.frozen
class Proxy:
    """A forward proxy: where it is and what every request to it carries. Its repr is the
    proxy's origin alone."""

    origin: Origin
    headers: tuple[tuple[bytes, bytes], ...] = attrs.field(repr=False)
    options: ClientOptions = attrs.field(repr=False)  # for the connection to the proxy
    # The targets' TLS inside a tunnel (the agent's ssl_context; None = the default).
    target_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)

    @classmethod
    def parse(
        cls,
        url: object,
        headers: HeadersType | None,
        ssl_context: ssl.SSLContext | None,
        options: ClientOptions,
        target_context: ssl.SSLContext | None,
        what: str = "proxy",
    ) -> Proxy:
        """Parse ``http(s)://[user:pass@]host:port``; ``InvalidArgumentError`` naming
        ``what`` (never quoting the URL: it may hold a password)."""
        if not isinstance(url, str):
            raise InvalidArgumentError(f"invalid {what}: expected a URL str")
        try:
            parts = urlsplit(url.strip())
            username, password = parts.username, parts.password
            origin = parse_origin(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")
        except (ValueError, InvalidArgumentError):
            raise InvalidArgumentError(
                f"invalid {what}: expected http://[user:password@]host:port"
            ) from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidArgumentError(f"invalid {what}: a proxy URL has no path or query")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgumentError("invalid proxy_ssl_context: expected an ssl.SSLContext")
        pairs = [pair for pair in _header_pairs(headers) if pair[0] != b"host"]
        if username is not None and not any(n == b"proxy-authorization" for n, _ in pairs):
            secret = f"{unquote(username)}:{unquote(password or '')}".encode()
            pairs.append((b"proxy-authorization", b"Basic " + base64.b64encode(secret)))
        proxy_options = attrs.evolve(
            options, ssl_context=ssl_context, connect_timeout=None, proxy_form=None
        )
        return cls(origin, tuple(pairs), proxy_options, target_context)

    def route(self, target: Origin) -> tuple[Connector, dict[str, Any]]:
        """The connector of a Pool for ``target`` through this proxy, and its extra
        options (absolute-form requests for http targets)."""
        if target.is_https:

            async def tunnel(origin: Origin) -> trio.abc.Stream:
                return await self._tunnel(origin)

            return tunnel, {}

        async def direct(origin: Origin) -> trio.abc.Stream:
            return await self._open()

        return direct, {"_proxy_form": self.headers}

    async def _open(self) -> trio.abc.Stream:
        """A connection to the proxy. A checkpoint; ``ProxyError`` if it cannot be had."""
        try:
            return await open_stream(self.origin, self.options, None)
        except ConnectTimeoutError:
            raise
        except ConnectError as exc:
            cause = exc.__cause__ or exc
            raise ProxyError(f"cannot connect to the proxy {self.origin.text}: {cause}") from cause

    async def _tunnel(self, target: Origin) -> trio.abc.Stream:
        """A connection to ``target`` through a tunnel of the proxy, TLS to the target
        inside it. A checkpoint."""
        stream = await self._open()
        try:
            await _connect_through(stream, self, target)
            context = self.target_context or default_ssl_context()
            tls = await start_tls(stream, context, target.host)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return tls


async def _connect_through(stream: trio.abc.Stream, proxy: Proxy, target: Origin) -> None:
    """Ask the proxy on ``stream`` for a tunnel to ``target``. A checkpoint.

    Raises:
        ProxyError: the proxy answered with a non-2xx status, or not with HTTP at all.
    """
    host = f"[{target.host}]" if ":" in target.host else target.host
    authority = f"{host}:{target.port}"  # CONNECT always names the port (RFC 9110 9.3.6)
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_HEAD_LIMIT)
    request = h11.Request(
        method="CONNECT",
        target=authority,
        headers=[(b"host", authority.encode("ascii")), *proxy.headers],
    )
    data = conn.send(request)
    assert data is not None
    try:
        await stream.send_all(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(_HEAD_LIMIT)
                conn.receive_data(bytes(chunk))
                continue
            break
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ProxyError(f"the proxy {proxy.origin.text} failed: {exc}") from exc
    except h11.RemoteProtocolError as exc:
        raise ProxyError(f"the proxy {proxy.origin.text} did not answer in HTTP: {exc}") from exc
    if not isinstance(event, h11.Response):
        raise ProxyError(f"the proxy {proxy.origin.text} closed the connection")
    status = event.status_code
    if not 200 <= status < 300:
        reason = event.reason.decode("latin-1", "replace")
        message = f"the proxy {proxy.origin.text} refused CONNECT {authority}: {status} {reason}"
        raise ProxyError(message.rstrip(), status)
    if conn.trailing_data[0]:
        raise ProxyError(f"the proxy {proxy.origin.text} sent bytes after its CONNECT answer")


@final
class ProxyAgent(AgentBase):
    """An ``Agent`` that sends every request through the forward proxy ``proxy``
    (``http://[user:password@]host:port`` or ``https://...``), as undici's ``ProxyAgent``.

    Args:
        proxy: the proxy's URL. A user and password in it are sent as
            ``proxy-authorization: Basic ...`` (and never shown in a repr, a log line or an
            error message).
        proxy_headers: headers sent to the proxy (with each ``CONNECT``, and with each
            request to an http target).
        proxy_ssl_context: the ``ssl.SSLContext`` for an ``https://`` proxy itself (the
            targets' TLS uses ``ssl_context``, as everywhere).
        **options: ``Agent`` options.

    ``http`` targets are requested in absolute form on pooled connections to the proxy;
    ``https`` targets through one ``CONNECT`` tunnel per connection, then TLS to the target
    inside it (the target's certificate and host name are verified). A proxy that cannot be
    reached, or refuses a ``CONNECT`` (``407``, ``403``, ``5xx``...), fails the request with
    ``ProxyError``, which carries the status.

    Raises:
        InvalidArgumentError: a bad argument (the message names it).
    """

    def __init__(
        self,
        proxy: str,
        *,
        proxy_headers: HeadersType | None = None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        if options.get("connector") is not None:
            raise InvalidArgumentError("invalid connector: a ProxyAgent connects through its proxy")
        super().__init__(**options)
        options_ = self._client_options
        self._proxy = Proxy.parse(
            proxy, proxy_headers, proxy_ssl_context, options_, options_.ssl_context
        )

    def _describe(self) -> str:
        return f"proxy={self._proxy.origin.text} origins={len(self._pools)}"

    def _pool_kwargs(self, origin: Origin) -> tuple[Connector | None, dict[str, Any]]:
        return self._proxy.route(origin)


@final
class EnvHttpProxyAgent(AgentBase):
    """An ``Agent`` that routes each origin directly or through the proxy the environment
    names, as undici's ``EnvHttpProxyAgent``.

    ``HTTP_PROXY`` (for http targets), ``HTTPS_PROXY`` (for https targets; ``HTTP_PROXY`` if
    unset) and ``NO_PROXY`` — each also in lower case, which wins — are read once, here.
    ``NO_PROXY`` lists what bypasses the proxy: host names (with their subdomains),
    ``.suffix``, IP addresses, CIDR ranges, any of them with ``:port``, or ``*``.

    Args:
        **options: ``ProxyAgent`` options but ``proxy`` (``proxy_headers`` and
            ``proxy_ssl_context`` apply to both proxies).

    Raises:
        InvalidArgumentError: a bad argument, or a proxy variable that is not a proxy URL
            (the message names the variable, never its value).
    """

    def __init__(
        self,
        *,
        proxy_headers: HeadersType | None = None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        env = os.environ
        self._routes: dict[str, Proxy | None] = {}
        for scheme, fallback in (("http", None), ("https", "http")):
            name = f"{scheme}_proxy"
            value = env.get(name) or env.get(name.upper())
            if value:
                self._routes[scheme] = Proxy.parse(
                    value,
                    proxy_headers,
                    proxy_ssl_context,
                    self._client_options,
                    self._client_options.ssl_context,
                    name.upper(),
                )
            else:
                self._routes[scheme] = self._routes.get(fallback) if fallback else None
        self._no_proxy = NoProxy(env.get("no_proxy") or env.get("NO_PROXY"))

    def _describe(self) -> str:
        shown = {scheme: proxy.origin.text for scheme, proxy in self._routes.items() if proxy}
        return f"proxies={shown} origins={len(self._pools)}"

    def _pool_kwargs(self, origin: Origin) -> tuple[Connector | None, dict[str, Any]]:
        proxy = self._routes.get(origin.scheme)
        if proxy is None or self._no_proxy.bypass(origin.host, origin.port):
            return super()._pool_kwargs(origin)
        return proxy.route(origin)
