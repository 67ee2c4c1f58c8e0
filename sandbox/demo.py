"""Start every vendor sandbox the demo data map points at, seeded with the demo subjects.

Knows the sandboxes only (no project code): it starts each on a free loopback port and returns
the environment variables the demo data map (config/demo/systems.yaml) reads their addresses
and credentials from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sandbox.google_ads import DEMO_CLIENT_ID as GOOGLE_CLIENT_ID
from sandbox.google_ads import DEMO_CLIENT_SECRET as GOOGLE_CLIENT_SECRET
from sandbox.google_ads import DEMO_DEVELOPER_TOKEN as GOOGLE_DEVELOPER_TOKEN
from sandbox.google_ads import DEMO_REFRESH_TOKEN as GOOGLE_REFRESH_TOKEN
from sandbox.google_ads import GoogleAdsSandbox
from sandbox.hubspot import DEMO_TOKEN as HUBSPOT_TOKEN
from sandbox.hubspot import HubSpotSandbox
from sandbox.kit import SandboxServer
from sandbox.linkedin import DEMO_TOKEN as LINKEDIN_TOKEN
from sandbox.linkedin import LinkedInSandbox
from sandbox.netsuite import DEMO_ACCOUNT_ID as NS_ACCOUNT_ID
from sandbox.netsuite import DEMO_CONSUMER_KEY as NS_CONSUMER_KEY
from sandbox.netsuite import DEMO_CONSUMER_SECRET as NS_CONSUMER_SECRET
from sandbox.netsuite import DEMO_TOKEN_ID as NS_TOKEN_ID
from sandbox.netsuite import DEMO_TOKEN_SECRET as NS_TOKEN_SECRET
from sandbox.netsuite import NetSuiteSandbox
from sandbox.salesforce import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SalesforceSandbox
from sandbox.wistia import DEMO_TOKEN as WISTIA_TOKEN
from sandbox.wistia import WistiaSandbox


@contextmanager
def demo_sandboxes(seed: int = 7) -> Iterator[tuple[dict[str, SandboxServer], dict[str, str]]]:
    """Yield (servers by system name, environment for the data map); stop them on exit.

    The demo credentials are the sandboxes' own fixed test values, not secrets.
    """
    hubspot = HubSpotSandbox()
    hubspot.seed_demo(seed)
    salesforce = SalesforceSandbox()
    salesforce.seed_demo(seed)
    wistia = WistiaSandbox()
    wistia.seed_demo(seed)
    netsuite = NetSuiteSandbox()
    netsuite.seed_demo(seed)
    google_ads = GoogleAdsSandbox()
    google_ads.seed_demo(seed)
    linkedin = LinkedInSandbox()
    linkedin.seed_demo(seed)
    servers = {"hubspot": SandboxServer(hubspot).start(), "salesforce": SandboxServer(salesforce).start(),
               "wistia": SandboxServer(wistia).start(), "netsuite": SandboxServer(netsuite).start(),
               "google_ads": SandboxServer(google_ads).start(), "linkedin": SandboxServer(linkedin).start()}
    env = {
        "DSR_HUBSPOT_URL": servers["hubspot"].url,
        "DSR_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
        # simple-salesforce always speaks https to *.salesforce.com; the connector's sandbox-only
        # override sends those calls to the loopback sandbox instead (see connectors/salesforce.py).
        "DSR_SALESFORCE_ENDPOINT_OVERRIDE": servers["salesforce"].url,
        "DSR_SF_CLIENT_ID": DEMO_CLIENT_ID,
        "DSR_SF_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "DSR_WISTIA_URL": servers["wistia"].url,
        "DSR_WISTIA_TOKEN": WISTIA_TOKEN,
        "DSR_NETSUITE_URL": servers["netsuite"].url,
        "DSR_NS_ACCOUNT_ID": NS_ACCOUNT_ID,
        "DSR_NS_CONSUMER_KEY": NS_CONSUMER_KEY,
        "DSR_NS_CONSUMER_SECRET": NS_CONSUMER_SECRET,
        "DSR_NS_TOKEN_ID": NS_TOKEN_ID,
        "DSR_NS_TOKEN_SECRET": NS_TOKEN_SECRET,
        "DSR_GOOGLE_ADS_URL": servers["google_ads"].url,
        "DSR_GOOGLE_ADS_TOKEN_URL": f"{servers['google_ads'].url}/token",
        "DSR_GOOGLE_ADS_CLIENT_ID": GOOGLE_CLIENT_ID,
        "DSR_GOOGLE_ADS_CLIENT_SECRET": GOOGLE_CLIENT_SECRET,
        "DSR_GOOGLE_ADS_REFRESH_TOKEN": GOOGLE_REFRESH_TOKEN,
        "DSR_GOOGLE_ADS_DEVELOPER_TOKEN": GOOGLE_DEVELOPER_TOKEN,
        "DSR_LINKEDIN_URL": servers["linkedin"].url,
        "DSR_LINKEDIN_TOKEN": LINKEDIN_TOKEN,
    }
    try:
        yield servers, env
    finally:
        for server in servers.values():
            server.stop()


def person_steps(servers: dict[str, SandboxServer]) -> dict[str, Callable[[str], None]]:
    """What a person does by hand in a vendor's own UI, per system, for the demo's manual tasks
    (Wistia has no delete API: support deletes the visitor)."""
    steps: dict[str, Callable[[str], None]] = {}
    if "wistia" in servers:
        wistia = servers["wistia"].vendor
        assert isinstance(wistia, WistiaSandbox)

        def wistia_support_deletes(email: str) -> None:
            for key in wistia.visitor_keys_with_email(email):
                wistia.delete_visitor(key)

        steps["wistia"] = wistia_support_deletes
    return steps
