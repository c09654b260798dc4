"""The ``trio-pool`` command line, parsed and validated into a :class:`BenchConfig`.

Theory of operation
-------------------
:func:`parse_args` is the only way to a :class:`BenchConfig`, and it does every check that
can be done without the network: numbers and their ranges, URLs, header syntax, the body file
and the CA file (read here, once). A failed check raises :class:`UsageError`, whose message is
one line naming the flag; :mod:`trio_pool._cli._main` prints it and exits with status 2, so a
bad command line never starts a server or opens a connection. The config is frozen: nothing
after parsing changes it.
"""

from __future__ import annotations

import argparse
import math
import re
import ssl
from collections.abc import Callable, Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import attrs

import trio_pool

__all__ = [
    "DEFAULT_TIMEOUT",
    "PROG",
    "BenchConfig",
    "UsageError",
    "build_parser",
    "parse_args",
]

PROG = "trio-pool"

DEFAULT_CONNECTIONS = 10
DEFAULT_CONCURRENCY = 10
DEFAULT_REQUESTS = 10_000
DEFAULT_PIPELINING = 1
DEFAULT_TIMEOUT = 10.0

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 section 5.6.2: a method and a field name are tokens.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Field values: visible ASCII, obs-text, space and tab (RFC 9110 section 5.5); no CR, LF, NUL.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Request headers trio_pool frames itself and refuses from the caller (API.md 1.3).
_FRAMING_HEADERS = frozenset({"transfer-encoding", "keep-alive", "upgrade", "content-length"})

_EPILOG = """\
requests vs errors: a response with any status is a request (see the status counts);
an error is a request that got no response at all (or none within --timeout).
With -n, requests + errors = REQUESTS.

examples:
  trio-pool bench
      benchmark the embedded server (started on 127.0.0.1, stopped afterwards)
  python -m trio_pool bench -n 20000 -c 10 --concurrency 10
      the same, 20,000 requests over 10 connections from 10 tasks
  trio-pool bench http://127.0.0.1:8080/health -d 30 -c 50 --concurrency 200 --warmup 2
      30 seconds against one server (after 2 s not counted), 200 requests at a time
  trio-pool bench http://127.0.0.1:8080/ -d 10 --rate 2000 --concurrency 100
      2,000 requests per second on a fixed schedule; latency counts from each request's
      scheduled time, so a server that stalls shows in the percentiles
  trio-pool bench https://127.0.0.1:8443/api -m POST -H "content-type: application/json" \\
      --body '{"a": 1}' --cacert ca.pem
      POST a JSON body over TLS, trusting a private CA
  trio-pool bench http://127.0.0.1:8081/ http://127.0.0.1:8082/ -p 4 --json
      balance over two servers (a line per upstream), 4 pipelined requests per connection
"""


class UsageError(Exception):
    """A bad command line: reported as one line on stderr, exit status 2.

    Attributes:
        prog: The (sub)command the message is about, e.g. ``"trio-pool bench"``.
    """

    def __init__(self, message: str, prog: str = f"{PROG} bench") -> None:
        super().__init__(message)
        self.prog = prog


@attrs.frozen
class BenchConfig:
    """A validated ``bench`` command line."""

    #: Origins to benchmark; empty means "start the embedded server".
    origins: tuple[str, ...]
    #: The request target: the URLs' path and query.
    target: str
    connections: int
    #: Exactly one of ``requests`` and ``duration`` is set.
    requests: int | None
    duration: float | None
    concurrency: int
    pipelining: int
    method: str
    json: bool
    #: ``-H`` headers, in order, as given (names as typed).
    headers: tuple[tuple[str, str], ...] = ()
    #: ``--body`` (UTF-8) or the contents of ``--body-file``.
    body: bytes | None = None
    #: Per request, seconds: connect, response head and each body gap are bounded by it, and a
    #: response that took longer in all counts as an error of kind ``timeout``.
    timeout: float = DEFAULT_TIMEOUT
    #: Where the trusted CA came from (``--cacert``), for the report.
    cacert: str | None = None
    insecure: bool = False
    #: The TLS context for https origins: None = trio_pool's default (system CAs).
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    #: Seconds of load before the measured run, not counted.
    warmup: float = 0.0
    #: Requests per second, open-loop; None = closed-loop (as fast as responses come back).
    rate: float | None = None

    def settings(self) -> dict[str, object]:
        """The run's settings as the report shows them (credentials in headers redacted)."""
        return {
            "urls": [origin + self.target for origin in self.origins],
            "embedded_server": not self.origins,
            "method": self.method,
            "requests": self.requests,
            "duration_s": self.duration,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "pipelining": self.pipelining,
            "rate": self.rate,
            "timeout_s": self.timeout,
            "warmup_s": self.warmup,
            "headers": [[name, _shown(name, value)] for name, value in self.headers],
            "body_bytes": len(self.body) if self.body is not None else 0,
            "cacert": self.cacert,
            "insecure": self.insecure,
        }


def _shown(name: str, value: str) -> str:
    # A report is pasted into tickets and chats: never a credential.
    secret = name.lower() in {"authorization", "proxy-authorization", "cookie"}
    return "<redacted>" if secret else value


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the default adds the usage text)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _number(what: str, *, zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {what}, got {text!r}") from None
        if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
            sign = "non-negative" if zero else "positive"
            raise argparse.ArgumentTypeError(f"must be a {sign} number of {what}, got {text!r}")
        return value

    return parse


def _method(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an HTTP method: {text!r}")
    return text


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected 'name: value', got {text!r}")
    if not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"not a header name: {name!r}")
    value = value.strip(" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"header {name!r} has a control character in its value")
    if name.lower() in _FRAMING_HEADERS:
        raise argparse.ArgumentTypeError(f"{name!r} is set by trio_pool itself, not by -H")
    return name, value


def _body_file(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc.strerror}") from None


def _cacert(path: str) -> str:
    # Loaded here (not only checked for existence) so that a file that is not PEM is a usage
    # error too, before any connection.
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"cannot load CA certificates from {path!r}: {reason}"
        raise argparse.ArgumentTypeError(message) from None
    return path


def build_parser() -> _Parser:
    """The ``trio-pool`` parser (its ``bench`` subcommand is all it has so far)."""
    version = f"{PROG} {trio_pool.__version__}"
    parser = _Parser(prog=PROG, description="trio_pool command-line tools.")
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="load-test an HTTP/1.1 server through a trio_pool Pool",
        description=(
            "Send HTTP/1.1 requests through a trio_pool Pool (one URL) or BalancedPool\n"
            "(several URLs with the same path) and report throughput and latency.\n"
            "Without a URL, an embedded server is started on 127.0.0.1 in a child process."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--version", action="version", version=version)
    bench.add_argument(
        "urls", nargs="*", metavar="URL", help="http:// or https:// URL (default: embedded server)"
    )
    add = bench.add_argument
    add(
        "-c",
        "--connections",
        type=_integer(0),
        default=DEFAULT_CONNECTIONS,
        help=f"max connections per origin; 0 = unlimited (default: {DEFAULT_CONNECTIONS})",
    )
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument(
        "-n",
        "--requests",
        type=_integer(1),
        help=f"number of requests to send (default: {DEFAULT_REQUESTS})",
    )
    amount.add_argument(
        "-d",
        "--duration",
        type=_number("seconds"),
        help="send requests for this many seconds instead; those in flight then are finished",
    )
    add(
        "--concurrency",
        type=_integer(1),
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight at once (default: {DEFAULT_CONCURRENCY})",
    )
    add(
        "-p",
        "--pipelining",
        type=_integer(0),
        default=DEFAULT_PIPELINING,
        help=(
            "requests in flight per connection; 0 = a new connection per request "
            f"(default: {DEFAULT_PIPELINING})"
        ),
    )
    add("-m", "--method", type=_method, help="request method (default: GET, POST with a body)")
    add(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar='"NAME: VALUE"',
        help="a request header (repeatable)",
    )
    body = bench.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="request body (sent as UTF-8)")
    body.add_argument(
        "--body-file", type=_body_file, metavar="PATH", help="request body: this file's bytes"
    )
    add(
        "--timeout",
        type=_number("seconds"),
        default=DEFAULT_TIMEOUT,
        help=(
            "per request: slower requests count as errors of kind 'timeout' "
            f"(default: {DEFAULT_TIMEOUT:g})"
        ),
    )
    tls = bench.add_mutually_exclusive_group()
    tls.add_argument(
        "--cacert", type=_cacert, metavar="PATH", help="trust the CA certificates in this PEM file"
    )
    tls.add_argument(
        "--insecure", action="store_true", help="https: do not verify the server's certificate"
    )
    add(
        "--warmup",
        type=_number("seconds", zero=True),
        default=0.0,
        help="send requests for this many seconds first, not counted (default: 0)",
    )
    add(
        "--rate",
        type=_number("requests per second"),
        help=(
            "open-loop: start requests on a fixed schedule, latency measured from each one's "
            "scheduled time (default: closed-loop, as fast as responses come back)"
        ),
    )
    add("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def _split_url(url: str) -> tuple[str, str]:
    """Return ``(origin, target)`` for an http(s) URL, or raise :class:`UsageError`."""
    if not url or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UsageError(f"invalid URL {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"invalid URL {url!r}: the scheme must be http or https")
    host = parts.hostname
    if not host:
        raise UsageError(f"invalid URL {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"invalid URL {url!r}: credentials in URLs are not supported")
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return origin, target


def _ssl_context(cacert: str | None, insecure: bool) -> ssl.SSLContext | None:
    if cacert is not None:
        return ssl.create_default_context(cafile=cacert)
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return None


def parse_args(argv: Sequence[str]) -> BenchConfig:
    """Validate a command line into a :class:`BenchConfig`. Not a checkpoint (no I/O but
    reading ``--body-file`` and ``--cacert``).

    Args:
        argv: The arguments after the program name.

    Returns:
        The validated configuration.

    Raises:
        UsageError: Any bad argument; the message is one line naming it.
        SystemExit: ``--help`` or ``--version`` (status 0).
    """
    # parse_known_args: leftovers are reported against "bench", where argparse would name
    # the top-level program.
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    origins: list[str] = []
    targets: set[str] = set()
    for url in args.urls:
        origin, target = _split_url(url)
        if origin not in origins:
            origins.append(origin)
        targets.add(target)
    if len(targets) > 1:
        raise UsageError("several URLs must share one path and query (they are balanced)")
    body: bytes | None = args.body_file
    if args.body is not None:
        body = args.body.encode()
    method = args.method or ("GET" if body is None else "POST")
    return BenchConfig(
        origins=tuple(origins),
        target=targets.pop() if targets else "/",
        connections=args.connections,
        requests=None if args.duration is not None else (args.requests or DEFAULT_REQUESTS),
        duration=args.duration,
        concurrency=args.concurrency,
        pipelining=args.pipelining,
        method=method,
        json=args.json,
        headers=tuple(args.header),
        body=body,
        timeout=args.timeout,
        cacert=args.cacert,
        insecure=args.insecure,
        ssl_context=_ssl_context(args.cacert, args.insecure),
        warmup=args.warmup,
        rate=args.rate,
    )
