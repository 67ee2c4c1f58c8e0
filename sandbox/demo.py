"""Start every vendor sandbox the demo data map points at, seeded with the demo subjects.

Knows the sandboxes only (no project code): it starts each on a free loopback port and returns
the environment variables the demo data map (config/demo/systems.yaml) reads their addresses
and credentials from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sandbox.hubspot import DEMO_TOKEN as HUBSPOT_TOKEN
from sandbox.hubspot import HubSpotSandbox
from sandbox.kit import SandboxServer


@contextmanager
def demo_sandboxes(seed: int = 7) -> Iterator[tuple[dict[str, SandboxServer], dict[str, str]]]:
    """Yield (servers by system name, environment for the data map); stop them on exit."""
    hubspot = HubSpotSandbox()
    hubspot.seed_demo(seed)
    servers = {"hubspot": SandboxServer(hubspot).start()}
    env = {"DSR_HUBSPOT_URL": servers["hubspot"].url, "DSR_HUBSPOT_TOKEN": HUBSPOT_TOKEN}
    try:
        yield servers, env
    finally:
        for server in servers.values():
            server.stop()
