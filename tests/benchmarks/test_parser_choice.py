"""``benchmarks/parser_choice.py`` and its httptools prototype (issue #16).

The prototype must keep the fast reader's contract, or the numbers compare a parser that
cuts corners: through the parser seam it must report exactly what h11 does on the
differential corpus and fuzz inputs (``tests/fuzz/test_fastparse_differential.py``), and it
must itself parse (not defer) the nginx response the benchmark measures. The benchmark's
parser switch must really switch, and put the library's parser back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("httptools")

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS.parent / "benchmarks"))
sys.path.insert(0, str(TESTS / "fuzz"))

import _servers  # noqa: E402
import parser_choice  # noqa: E402
import test_fastparse_differential as differential  # noqa: E402
from _clients import Target  # noqa: E402
from _httptools_reader import HttptoolsReader  # noqa: E402

from trio_pool.http import _connection, _parser  # noqa: E402
from trio_pool.http._fastparse import END, FastHead, FastReader  # noqa: E402

pytestmark = pytest.mark.timeout(180)

# Where llhttp and h11 read a head differently, or llhttp is lenient: the prototype defers.
LLHTTP_CORPUS = [
    # llhttp raises HttpParserUpgrade (not an HttpParserError) at an upgrade; found by the fuzz.
    b"HTTP/1.1 101\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1 \r\ncontent-length: 0\r\n\r\n",  # h11 strips it
    b"HTTP/1.1 200 OK\r\nx-a: 1\t\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1 \r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nx-a: a\x7fb\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 O\x01K\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\tfold\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a : 1\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-a: 1\r\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked \r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a:   \r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK  \r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1  200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: a\tb\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-\xffa: 1\r\ncontent-length: 0\r\n\r\n",
]


@pytest.fixture
def httptools_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser seam with the prototype as its reader (what ``--parser httptools`` runs)."""
    monkeypatch.setattr(_parser, "FastReader", HttptoolsReader)


@pytest.mark.usefixtures("httptools_seam")
@pytest.mark.parametrize(
    "data", [*differential.CORPUS, *LLHTTP_CORPUS, parser_choice.NGINX_RESPONSE]
)
@pytest.mark.parametrize("eof", [False, True])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_prototype_reports_what_h11_does(data: bytes, eof: bool, method: str) -> None:
    differential.check(method, data, (), eof)
    differential.check(method, data, tuple(range(1, len(data))), eof)


@pytest.mark.usefixtures("httptools_seam")
def test_the_prototype_reports_what_h11_does_on_fuzzed_responses() -> None:
    differential.test_seam_reports_exactly_what_h11_does()


def _events(reader: FastReader, data: bytes) -> list[object]:
    reader.receive_data(data)
    out: list[object] = []
    while (event := reader.next_event()) is not END:
        assert type(event) in (FastHead, bytes), event  # not deferred, not waiting
        out.append(_head_fields(event) if type(event) is FastHead else event)
    return out


def _head_fields(head: object) -> dict[str, object]:
    return {name: getattr(head, name) for name in FastHead.__slots__}


def test_the_prototype_itself_parses_the_measured_response() -> None:
    data = parser_choice.NGINX_RESPONSE
    ours = _events(HttptoolsReader(4096), data)
    assert ours == _events(FastReader(4096), data)
    assert ours[-1] == b"hello world\n"


@pytest.fixture(scope="module")
def embedded() -> Iterator[_servers.Server]:
    with _servers.start("embedded") as server:
        yield server


@pytest.mark.parametrize("name", parser_choice.PARSERS)
def test_each_parser_choice_is_used_and_then_undone(
    embedded: _servers.Server, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[_parser.Parser] = []
    factory = parser_choice._factory

    def recording(chosen: str) -> object:
        make = factory(chosen)

        def build(max_head: int) -> _parser.Parser:
            built.append(make(max_head))
            return built[-1]

        return build

    monkeypatch.setattr(parser_choice, "_factory", recording)
    target = Target(embedded.origins("http"), _servers.SMALL_PATH, 12, None, embedded.pids)
    sample = parser_choice._measure(name, target, 2, 10, 30.0)
    assert (sample.completed, sample.errors, sample.cut) == (10, 0, False)
    assert built
    expected = {"h11": FastReader, "fast": FastReader, "httptools": HttptoolsReader}[name]
    assert all(type(parser._fast) is expected for parser in built)
    assert all(parser._h11_only is (name == "h11") for parser in built)
    assert getattr(_connection, parser_choice._SEAM) is _parser.Parser
