"""``opentelemetry-api`` is optional: trio_pool imports without it, and
``trio_pool.opentelemetry`` says which extra to install. Each check runs in its own
interpreter in which ``import opentelemetry`` fails, as it does where the package is absent."""

from __future__ import annotations

from _python_run import run_python

_WITHOUT_OPENTELEMETRY = "import sys\nsys.modules['opentelemetry'] = None  # import fails\n"


def test_trio_pool_imports_and_works_without_opentelemetry() -> None:
    code = _WITHOUT_OPENTELEMETRY + (
        "import trio, trio_pool\n"
        "from trio_pool.testing import MockPool\n"
        "async def main():\n"
        "    async with MockPool() as pool:\n"
        "        pool.intercept('GET', '/').reply(204)\n"
        "        assert (await pool.request('GET', '/')).status == 204\n"
        "trio.run(main)\n"
        "assert 'trio_pool.opentelemetry' not in sys.modules\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_the_integration_names_its_extra_when_the_api_is_missing() -> None:
    code = _WITHOUT_OPENTELEMETRY + (
        "try:\n    import trio_pool.opentelemetry\nexcept ImportError as exc:\n    print(exc)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'trio_pool[opentelemetry]'" in result.stdout
