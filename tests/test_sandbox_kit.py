"""The sandbox kit itself: routing, limits, and faults that a client really experiences."""

from __future__ import annotations

import pytest
import requests

from sandbox.kit import FaultConfig, Request, Response, SandboxServer, Vendor, WindowLimiter


class Echo(Vendor):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.window = WindowLimiter(3, 60)
        self.router.add("GET", r"/items/(?P<item>\d+)", lambda r: Response.json({"item": r.params["item"]}))

    def limit(self, request: Request) -> Response | None:
        ok, retry_after, _ = self.window.acquire()
        return None if ok else Response.json({"error": "slow down"}, 429, {"Retry-After": str(int(retry_after) + 1)})

    def reset_state(self) -> None:
        self.window.reset()


@pytest.fixture
def echo():
    with SandboxServer(Echo()) as server:
        yield server


def test_routes_params_404_and_405(echo: SandboxServer) -> None:
    assert requests.get(f"{echo.url}/items/7", timeout=5).json() == {"item": "7"}
    assert requests.get(f"{echo.url}/nothing", timeout=5).status_code == 404
    assert requests.post(f"{echo.url}/items/7", timeout=5).status_code == 405


def test_window_limit_throttles_then_reset_frees_it(echo: SandboxServer) -> None:
    codes = [requests.get(f"{echo.url}/items/1", timeout=5).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    requests.post(f"{echo.url}/__sandbox__/reset", timeout=5)
    assert requests.get(f"{echo.url}/items/1", timeout=5).status_code == 200


def test_injected_reset_is_a_real_connection_reset(echo: SandboxServer) -> None:
    requests.post(f"{echo.url}/__sandbox__/faults", json={"reset_rate": 1.0}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{echo.url}/items/1", timeout=5)


def test_injected_timeout_makes_the_client_time_out(echo: SandboxServer) -> None:
    requests.post(f"{echo.url}/__sandbox__/faults", json={"timeout_rate": 1.0, "timeout_seconds": 2}, timeout=5)
    with pytest.raises(requests.Timeout):
        requests.get(f"{echo.url}/items/1", timeout=0.3)


def test_faults_are_replayable_from_their_seed() -> None:
    def sequence() -> list[str | None]:
        vendor = Echo()
        vendor.faults.configure(FaultConfig(error_rate=0.3, throttle_rate=0.2, seed=42))
        return [vendor.faults.draw("/items/1") for _ in range(50)]

    first = sequence()
    assert first == sequence()
    assert {"error", "throttle", None} == set(first)


def test_burst_faults_only_the_next_calls(echo: SandboxServer) -> None:
    requests.post(f"{echo.url}/__sandbox__/faults", json={"error_rate": 1.0, "burst": 2}, timeout=5)
    codes = [requests.get(f"{echo.url}/items/1", timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    stats = requests.get(f"{echo.url}/__sandbox__/stats", timeout=5).json()
    assert stats["fault_error"] == 2 and stats["calls"] == 3


def test_unknown_fault_setting_is_refused_by_name(echo: SandboxServer) -> None:
    answer = requests.post(f"{echo.url}/__sandbox__/faults", json={"eror_rate": 1.0}, timeout=5)
    assert answer.status_code == 400 and "eror_rate" in answer.json()["error"]
