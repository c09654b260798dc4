"""The bench command line: usage errors are one line and exit status 2; --help has examples.

These run ``main()`` in-process: every case fails during argument validation, before any
I/O, so nothing is started and nothing is contacted.
"""

from __future__ import annotations

import pytest

from trio_pool._cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["bench", "--bogus"], "unrecognized arguments"),
        (["bench", "ftp://127.0.0.1/"], "scheme must be http or https"),
        (["bench", "127.0.0.1:8080"], "scheme must be http or https"),
        (["bench", "not a url"], "invalid URL"),
        (["bench", "http://"], "no host"),
        (["bench", "http://127.0.0.1:99999/"], "invalid URL"),
        (["bench", "http://127.0.0.1:port/"], "invalid URL"),
        (["bench", "http://user:secret@127.0.0.1/"], "credentials"),
        (["bench", "http://127.0.0.1:1/a", "http://127.0.0.1:2/b"], "share one path"),
        (["bench", "-c", "-1"], "-c/--connections: must be at least 0, got -1"),
        (["bench", "-c", "ten"], "-c/--connections: expected an integer"),
        (["bench", "-n", "0"], "-n/--requests: must be at least 1"),
        (["bench", "-n", "-5"], "-n/--requests: must be at least 1, got -5"),
        (["bench", "-n", "1.5"], "-n/--requests: expected an integer"),
        (["bench", "-d", "-1"], "-d/--duration: must be a positive number"),
        (["bench", "-d", "0"], "-d/--duration: must be a positive number"),
        (["bench", "-d", "nan"], "-d/--duration: must be a positive number"),
        (["bench", "-d", "soon"], "-d/--duration: expected a number of seconds"),
        (["bench", "-n", "5", "-d", "1"], "not allowed with argument"),
        (["bench", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["bench", "-p", "-1"], "-p/--pipelining: must be at least 0"),
        (["bench", "-m", "GE T"], "-m/--method: not an HTTP method"),
        (["bench", "-m", ""], "-m/--method: not an HTTP method"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.endswith("\n")
    prog = "trio-pool" if argv[:1] != ["bench"] else "trio-pool bench"
    assert captured.err.startswith(f"{prog}: error: ")
    assert expected in captured.err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "trio-pool bench http://" in out
    for option in ("--connections", "--requests", "--duration", "--concurrency"):
        assert option in out
    for option in ("--pipelining", "--method", "--json"):
        assert option in out
