"""Adapters that put trio_pool under other libraries (optional extras).

Nothing here is imported by ``trio_pool`` itself: each adapter is reached through its own
public module (``trio_pool.httpx``, ``trio_pool.httpx2``), which imports the library it
adapts and fails with an ``ImportError`` naming the extra to install when it is missing.
"""
