"""HTTP/1.1 on h11: ``Client`` (one connection) and ``Pool`` (many), in the manner of undici.

The public names are re-exported from :mod:`trio_pool`; the modules here are private.
"""
