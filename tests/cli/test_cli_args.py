"""The bench command line: usage errors are one line and exit status 2; --help has examples.

Most run ``main()`` in-process: every case fails during argument validation, before any
I/O, so nothing is started and nothing is contacted. The last tests run the real command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from _bench_run import command, run

import trio_pool
from trio_pool._cli import main

README = str(Path(__file__).resolve().parents[2] / "README.md")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
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
        (["bench", "-H", "no colon"], "-H/--header: expected 'name: value'"),
        (["bench", "-H", "bad name: x"], "-H/--header: not a header name: 'bad name'"),
        (["bench", "-H", ": x"], "-H/--header: not a header name: ''"),
        (["bench", "-H", "x: a\x01b"], "-H/--header: header 'x' has a control character"),
        (["bench", "-H", "x: a\r\nb: c"], "-H/--header: header 'x' has a control character"),
        (["bench", "-H", "Transfer-Encoding: chunked"], "-H/--header: 'Transfer-Encoding' is set"),
        (["bench", "-H", "content-length: 3"], "-H/--header: 'content-length' is set"),
        (["bench", "--body-file", "/nonexistent/body"], "--body-file: cannot read"),
        (["bench", "--body-file", "/"], "--body-file: cannot read '/': Is a directory"),
        (["bench", "--body", "x", "--body-file", README], "not allowed with argument --body"),
        (["bench", "--timeout", "0"], "--timeout: must be a positive number of seconds"),
        (["bench", "--timeout", "-1"], "--timeout: must be a positive number of seconds"),
        (["bench", "--timeout", "inf"], "--timeout: must be a positive number of seconds"),
        (["bench", "--timeout", "soon"], "--timeout: expected a number of seconds"),
        (["bench", "--cacert", "/nonexistent/ca.pem"], "--cacert: cannot load CA certificates"),
        (["bench", "--cacert", README], "--cacert: cannot load CA certificates"),
        (["bench", "--warmup", "-1"], "--warmup: must be a non-negative number of seconds"),
        (["bench", "--warmup", "nan"], "--warmup: must be a non-negative number of seconds"),
        (["bench", "--warmup", "a bit"], "--warmup: expected a number of seconds"),
        (["bench", "--rate", "0"], "--rate: must be a positive number of requests per second"),
        (["bench", "--rate", "-5"], "--rate: must be a positive number of requests per second"),
        (["bench", "--rate", "fast"], "--rate: expected a number of requests per second"),
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
    for option in ("--pipelining", "--method", "--json", "--header", "--body", "--body-file"):
        assert option in out
    for option in ("--timeout", "--cacert", "--insecure", "--warmup", "--rate", "--version"):
        assert option in out


async def test_no_command_prints_the_usage() -> None:
    completed = await run(command()[:3])  # python -m trio_pool
    assert completed.returncode == 0
    out = completed.stdout.decode()
    assert out.startswith("usage: trio-pool ")
    assert "bench" in out
    assert completed.stderr == b""


@pytest.mark.parametrize("where", [[], ["bench"]])
async def test_version(where: list[str]) -> None:
    completed = await run([*command()[:3], *where, "--version"])
    assert completed.returncode == 0
    assert completed.stdout.decode() == f"trio-pool {trio_pool.__version__}\n"


async def test_a_bad_value_from_the_real_command() -> None:
    completed = await run(command("--rate", "0", "-n", "5"))
    assert completed.returncode == 2
    assert completed.stdout == b""
    assert completed.stderr.decode() == (
        "trio-pool bench: error: argument --rate: must be a positive number of requests "
        "per second, got '0'\n"
    )


def test_cacert_and_insecure_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cafile = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(cafile))
    assert main(["bench", "--cacert", str(cafile), "--insecure"]) == 2
    assert capsys.readouterr().err == (
        "trio-pool bench: error: argument --insecure: not allowed with argument --cacert\n"
    )
