"""The OpenTelemetry semantic-convention names this package emits, and the attributes of an
origin or URL.

Theory of operation
-------------------
Every metric, attribute and value name the instrumentation uses is a constant here, spelled as
the stable HTTP conventions and the database-client conventions spell it, so a typo is one
place to fix and the tests compare against the same text the specification has. Attribute
sets derived from an origin are computed once per origin (an LRU cache of immutable tuples) and
copied into a fresh dict for each use, since a recorded attribute dict must not change.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, Meter

__all__ = [
    "DB_CONNECTION_COUNT",
    "DB_CONNECTION_IDLE_MIN",
    "DB_CONNECTION_MAX",
    "DB_CONNECTION_PENDING_REQUESTS",
    "DB_CONNECTION_TIMEOUTS",
    "DB_CONNECTION_USE_TIME",
    "DB_CONNECTION_WAIT_TIME",
    "DB_POOL_NAME",
    "DB_STATE",
    "DURATION_BUCKETS",
    "ERROR_TYPE",
    "HTTP_CONNECTION_DURATION",
    "HTTP_CONNECTION_STATE",
    "HTTP_OPEN_CONNECTIONS",
    "HTTP_REQUEST_DURATION",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_RESPONSE_STATUS_CODE",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
    "URL_SCHEME",
    "error_type",
    "known_method",
    "method_attributes",
    "seconds_histogram",
    "origin_attributes",
]

# HTTP client metrics (stable).
HTTP_REQUEST_DURATION = "http.client.request.duration"
HTTP_OPEN_CONNECTIONS = "http.client.open_connections"
HTTP_CONNECTION_DURATION = "http.client.connection.duration"
# HTTP attributes.
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_CONNECTION_STATE = "http.connection.state"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
ERROR_TYPE = "error.type"

# Database-client connection-pool metrics and their attributes.
DB_CONNECTION_COUNT = "db.client.connection.count"
DB_CONNECTION_MAX = "db.client.connection.max"
DB_CONNECTION_IDLE_MIN = "db.client.connection.idle.min"
DB_CONNECTION_PENDING_REQUESTS = "db.client.connection.pending_requests"
DB_CONNECTION_WAIT_TIME = "db.client.connection.wait_time"
DB_CONNECTION_USE_TIME = "db.client.connection.use_time"
DB_CONNECTION_TIMEOUTS = "db.client.connection.timeouts"
DB_POOL_NAME = "db.client.connection.pool.name"
DB_STATE = "db.client.connection.state"

#: The bucket boundaries (seconds) the HTTP conventions advise for request durations.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# The methods the conventions know; any other is reported as "_OTHER".
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=256)
def _origin_pairs(url: str) -> tuple[tuple[str, str | int], ...]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    pairs: list[tuple[str, str | int]] = []
    if parts.hostname:
        pairs.append((SERVER_ADDRESS, parts.hostname))
    try:
        port = parts.port
    except ValueError:  # not a port: leave it out rather than fail a metric
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if port is not None:
        pairs.append((SERVER_PORT, port))
    if scheme:
        pairs.append((URL_SCHEME, scheme))
    return tuple(pairs)


def origin_attributes(url: str) -> dict[str, str | int]:
    """``server.address``, ``server.port`` and ``url.scheme`` of an origin or absolute URL
    (the port defaulted from the scheme). A new dict each call. Not a checkpoint."""
    return dict(_origin_pairs(url.split("?", 1)[0] if "?" in url else url))


def known_method(method: str) -> str:
    """``http.request.method``'s value: ``method``, or ``_OTHER`` for one the conventions do
    not know (so a metric's cardinality stays bounded)."""
    return method if method in _KNOWN_METHODS else "_OTHER"


def method_attributes(method: str) -> dict[str, str]:
    """A span's ``http.request.method`` (:func:`known_method`), with the method as sent in
    ``http.request.method_original`` when that is ``_OTHER``."""
    if method in _KNOWN_METHODS:
        return {HTTP_REQUEST_METHOD: method}
    return {HTTP_REQUEST_METHOD: "_OTHER", HTTP_REQUEST_METHOD_ORIGINAL: method}


def error_type(status: int | None, error: BaseException | None) -> str | None:
    """``error.type``: the exception's class name, else the status code of a 4xx or 5xx
    response (as text), else None (the request succeeded)."""
    if error is not None:
        return type(error).__qualname__
    if status is not None and status >= 400:
        return str(status)
    return None


def seconds_histogram(meter: Meter, name: str, description: str) -> Histogram:
    """A histogram of durations in seconds, with the buckets the conventions advise."""
    return meter.create_histogram(
        name,
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )
