"""``NO_PROXY``: which origins bypass the proxy. A pure function of the variable's text.

The entries are separated by commas (and/or white space), case-insensitive:

* ``*`` — every origin.
* a host name, ``example.com`` — that host and its subdomains (``api.example.com``);
  ``.example.com`` and ``*.example.com`` mean the same (curl's reading, and httpx's).
* an IP address, ``127.0.0.1`` or ``::1`` (``[::1]`` too) — that address.
* a CIDR range, ``10.0.0.0/8``, ``fd00::/8`` — every IP address in it (a host *name* is not
  resolved to be matched against a range).
* any of the above with ``:port`` (``example.com:8080``, ``[::1]:8443``) — only on that port.

An entry that is none of these (garbage, a bad port) is ignored, as curl does.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

__all__ = ["NoProxy"]

_PORT = re.compile(r"^(.*):(\d{1,5})$")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class _Entry:
    host: str | None  # a host name suffix (no leading dot), or None
    network: _Network | None  # an address or a range, or None
    port: int | None  # None = any port


def _parse_entry(text: str) -> _Entry | None:
    port: int | None = None
    if text.startswith("["):  # [v6] or [v6]:port
        address, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
        text = address
    elif text.count(":") == 1:  # host:port (an IPv6 address has more colons)
        match = _PORT.match(text)
        if match is None:
            return None
        text, port = match.group(1), int(match.group(2))
    if port is not None and not 0 < port < 65536:
        return None
    try:
        return _Entry(None, ipaddress.ip_network(text, strict=False), port)
    except ValueError:
        pass
    name = text.removeprefix("*").removeprefix(".")
    if not name or "/" in name or ":" in name:
        return None
    return _Entry(name, None, port)


class NoProxy:
    """A parsed ``NO_PROXY`` value (see the module docstring)."""

    __slots__ = ("_all", "_entries")

    def __init__(self, text: str | None) -> None:
        entries = [part for part in re.split(r"[,\s]+", (text or "").strip().lower()) if part]
        self._all = "*" in entries
        parsed = (_parse_entry(entry) for entry in entries if entry != "*")
        self._entries = [entry for entry in parsed if entry is not None]

    def bypass(self, host: str, port: int) -> bool:
        """True if a request to ``host:port`` should not go through the proxy. ``host`` is
        a host name or an IP literal (no brackets)."""
        if self._all:
            return True
        host = host.lower().rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self._entries:
            if entry.port is not None and entry.port != port:
                continue
            if entry.network is not None:
                if address is not None and address in entry.network:
                    return True
            elif entry.host is not None and (host == entry.host or host.endswith("." + entry.host)):
                return True
        return False
