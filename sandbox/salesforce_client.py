"""The Salesforce sandbox's demo org credentials, and `OrgClient`: a client of the org over the wire."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

from sandbox.kit import ControlClient

DEMO_DOMAIN = "precision.my"
"""The demo org's My Domain: the connector's ``auth.domain`` (client credentials need a My Domain)."""

DEMO_INSTANCE_URL = f"https://{DEMO_DOMAIN}.salesforce.com"
"""What the token endpoint answers as ``instance_url``."""

DEMO_CLIENT_ID = "3MVG9PrecisionOpticalDsrSandbox.DemoConnectedApp"
"""The demo connected app's consumer key (sandbox only)."""

DEMO_CLIENT_SECRET = "sandbox-only-demo-consumer-secret-5f1c"
"""The demo connected app's consumer secret (sandbox only; never a real credential)."""

DEMO_JWT_USERNAME = "dsr-integration@precision.example"
"""The integration user a JWT bearer assertion may name as ``sub``."""

COLLECTION_LIMIT = 200
"""Records per sObject Collections call at most."""
TOKEN_PATH = "/services/oauth2/token"


class OrgClient(ControlClient):
    """Adds and reads records over the wire, as any Salesforce client would (plain `requests`).

    Records go in through the vendor's own create endpoints (``POST sobjects/{Object}/`` and sObject
    Collections), so they pass the same validation as anything a connector writes. The sandbox's
    control API (faults, refusals, stats, seeding) is wrapped too.
    """

    def __init__(self, base_url: str, *, client_id: str = DEMO_CLIENT_ID, client_secret: str = DEMO_CLIENT_SECRET,
                 version: str = "62.0", timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout=timeout)
        self.version = version
        self._client_id, self._client_secret = client_id, client_secret
        self._token: str | None = None

    @property
    def api(self) -> str:
        return f"{self.base_url}/services/data/v{self.version}"

    def token(self, *, fresh: bool = False) -> str:
        """An access token from the client-credentials flow (HTTP Basic, as simple-salesforce sends it)."""
        if self._token is None or fresh:
            answer = self._http.post(f"{self.base_url}{TOKEN_PATH}", data={"grant_type": "client_credentials"},
                                     auth=(self._client_id, self._client_secret), timeout=self.timeout)
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One REST call under ``/services/data/vXX.X`` (or a full path starting with ``/services/``)."""
        url = f"{self.base_url}{path}" if path.startswith("/services/") else f"{self.api}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self._http.request(method, url, headers=headers, timeout=self.timeout, **kwargs)

    def create(self, object_name: str, fields: Mapping[str, Any]) -> str:
        """Create one record (``POST sobjects/{Object}/`` -> 201); its id."""
        answer = self.call("POST", f"sobjects/{object_name}/", json=dict(fields))
        if answer.status_code != 201:
            raise RuntimeError(f"create {object_name} failed: {answer.status_code} {answer.text}")
        return str(answer.json()["id"])

    def create_many(self, object_name: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create records 200 at a time through sObject Collections (all or none per call); their ids."""
        ids: list[str] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = [{"attributes": {"type": object_name}, **r} for r in records[start : start + COLLECTION_LIMIT]]
            answer = self.call("POST", "composite/sobjects", json={"allOrNone": True, "records": chunk})
            results = answer.json()
            if answer.status_code != 200 or not all(r["success"] for r in results):
                raise RuntimeError(f"create {object_name} failed: {answer.status_code} {answer.text[:500]}")
            ids.extend(str(r["id"]) for r in results)
        return ids

    def query(self, soql: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following nextRecordsUrl."""
        answer = self.call("GET", "queryAll/" if include_deleted else "query/", params={"q": soql})
        answer.raise_for_status()
        page = answer.json()
        records = list(page["records"])
        while not page["done"]:
            answer = self.call("GET", page["nextRecordsUrl"])
            answer.raise_for_status()
            page = answer.json()
            records.extend(page["records"])
        return records
