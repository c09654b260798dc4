"""The ``trio-pool`` command line (``python -m trio_pool``): ``trio-pool bench``.

One module per concept: ``_args`` (the command line, validated), ``_target`` (the embedded
server's process, CPU accounting), ``_send`` (the dispatcher and how one request is sent),
``_load`` (the load loop and its recorders), ``_report`` (table and JSON), ``_main`` (the
entry point, Ctrl-C, exit statuses).
"""

from ._main import main

__all__ = ["main"]
