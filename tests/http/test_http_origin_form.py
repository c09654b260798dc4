"""``origin_form`` remembers the origin an absolute URL's ``scheme://authority`` names and
splits the rest itself (issue #15's speed): it must read every URL as ``urlsplit`` does."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from trio_pool import InvalidArgumentError
from trio_pool.http._origin import parse_origin
from trio_pool.http._prepare import origin_form

ORIGINS = (parse_origin("http://127.0.0.1:8080"), parse_origin("https://[::1]"))

URLS = [
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080/",
    "http://127.0.0.1:8080/a/b?x=1&y=2",
    "http://127.0.0.1:8080?x=1",
    "http://127.0.0.1:8080#frag",
    "http://127.0.0.1:8080/p#f?not-a-query",
    "http://127.0.0.1:8080/p?q#f",
    "http://127.0.0.1:8080/p?",
    "http://127.0.0.1:8080/p??x",
    "HTTP://127.0.0.1:8080/upper-scheme",
    "https://[::1]/v6?x",
    "https://[::1]:443/v6",
    "http://127.0.0.1:8080//double",
]


def _reference(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"


@pytest.mark.parametrize("url", URLS)
def test_read_as_urlsplit_does(url: str) -> None:
    for _ in range(2):  # the second time from what it remembered
        assert origin_form(url, ORIGINS) == _reference(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/",  # another port
        "http://127.0.0.1:99999/",  # no such port
        "http://[::1/",  # an unclosed bracket
        "http://user@127.0.0.1:8080/",  # user info
        "http://127.0.0.1:8080/a b",  # a space
        "http://127.0.0.1:8080/\u00e9",  # not ASCII
    ],
)
def test_refused_every_time(url: str) -> None:
    assert origin_form("http://127.0.0.1:8080/", ORIGINS) == "/"
    for _ in range(2):
        with pytest.raises(InvalidArgumentError):
            origin_form(url, ORIGINS)


def test_another_dispatchers_origin_is_refused_after_a_match() -> None:
    assert origin_form("https://[::1]/x", ORIGINS) == "/x"
    with pytest.raises(InvalidArgumentError, match="not this dispatcher's"):
        origin_form("https://[::1]/x", ORIGINS[:1])
