"""The error hierarchy of API.md 1.7 and 2.1."""

from __future__ import annotations

import pytest
import trio

import trio_pool
import trio_pool.errors

ALL_ERRORS = [getattr(trio_pool, name) for name in trio_pool.errors.__all__]


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: e.__name__)
def test_every_error_is_a_trio_pool_error_exported_at_top_level(error: type[Exception]) -> None:
    assert issubclass(error, trio_pool.TrioPoolError)
    assert getattr(trio_pool.errors, error.__name__) is error
    assert error.__doc__, f"{error.__name__} says when it is raised"


def test_invalid_argument_error_is_a_value_error() -> None:
    assert issubclass(trio_pool.InvalidArgumentError, ValueError)


@pytest.mark.parametrize(
    "error",
    [
        trio_pool.ConnectTimeoutError,
        trio_pool.HeadersTimeoutError,
        trio_pool.BodyTimeoutError,
        trio_pool.RequestTimeoutError,
        trio_pool.AcquireTimeoutError,
    ],
    ids=lambda e: e.__name__,
)
def test_timeouts_are_trio_too_slow_errors(error: type[Exception]) -> None:
    assert issubclass(error, trio.TooSlowError)


def test_connect_timeout_is_a_connect_error() -> None:
    assert issubclass(trio_pool.ConnectTimeoutError, trio_pool.ConnectError)


def test_response_status_error_carries_the_response() -> None:
    class FakeResponse:
        status = 503

    response = FakeResponse()
    error = trio_pool.ResponseStatusError("503 Service Unavailable", response)
    assert error.response is response
    assert error.status == 503
    assert str(error) == "503 Service Unavailable"
