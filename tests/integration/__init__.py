"""Integration tests: trio_pool against real services (a throwaway PostgreSQL server)."""
