"""The httpx / httpx2 transport tests (a package, so its conftest is its own module)."""
