"""A few crash-and-resume trials of the chaos campaign (`make chaos` runs hundreds): a request
killed in the window between the vendor's answer and the ledger's record, one killed while
sealing; each re-run ends exactly as an uninterrupted run and repeats no vendor call that is not
idempotent. (Purge trials run in `make chaos` only: a purge run takes ~10 s.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.crash import Campaign
from chaos.world import World


@pytest.fixture
def campaign(_sandbox_servers, tmp_path: Path) -> Campaign:
    servers, env = _sandbox_servers
    campaign = Campaign(World(servers, env, tmp_path), seed=1)
    campaign.measure_baselines(("erasure",))
    return campaign


def test_crashed_runs_resume_to_the_uninterrupted_end_state(campaign: Campaign, monkeypatch) -> None:
    picks = iter([("erased-unrecorded@2", None), ("sealing", None)])
    monkeypatch.setattr(campaign, "_pick", lambda *a: next(picks))
    campaign.request_trial(0, kind="erasure", crashes=1)
    campaign.request_trial(1, kind="erasure", crashes=1)
    assert campaign.failures == []
    assert campaign.figures["crashes"] == 2  # every crash point was reached: the trials tested something
    for server in campaign.w.servers.values():
        server.vendor.journal = None
