"""Small facts about network addresses that several doors and adapters check the same way."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """A loopback host name or address, without a port (as `urlsplit(...).hostname` gives it).

    Plain http, sandbox overrides and self-made links are allowed to such hosts only.
    """
    name = (host or "").strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
