"""Google Ads Customer Match: remove the subject from configured audiences (REST over `requests`).

The `google-ads` package is gRPC only and cannot be pointed at an HTTP emulator (vendor-apis.md section
0), so this connector speaks the REST/JSON interface on the shared HTTP base, in one of two modes
(`settings.mode`), each its own class: ``offline_user_data_job`` (the Google Ads API's offline user data
jobs, `connectors.google_ads.jobs`) and ``data_manager`` (the Data Manager API, Google's replacement,
`connectors.google_ads.data_manager`). `create` builds the mode's connector.

What it does, per operation of the contract (DESIGN.md):

- `discover`: audiences are write-only (membership cannot be read), so it returns one ref per configured
  list (object ``user_list``, id = the list's resource name ``customers/{cid}/userLists/{id}``,
  categories from `categories`, marketing by default), meaning "this audience may contain the subject".
  No call to Google. It remembers the subject for `erase` (see below).
- `export`: one record per list with what can be said without personal data (the audience, the platform,
  that membership is not readable, which identifier is uploaded). No call to Google; no hash.
- `erase`: the mode's removals; RETAIN decisions make no call; ANONYMISE is carried out as a removal (the
  only operation an audience has). A list's outcome is done when its job ended ``SUCCESS`` (mode
  ``offline_user_data_job``) or its request status reads SUCCESS (``data_manager``); never ``already_gone``
  (absence cannot be seen). `vendor_receipt_id` lists the jobs with their final status
  (``google_ads:customers/1/offlineUserDataJobs/2=SUCCESS ...``) or the Data Manager request ids
  (``google_datamanager:customers/1/userLists/111=<requestId>:SUCCESS ...``): "removal confirmed" by the
  vendor's status (`confirms_removal`), never "verified absent". Idempotent: removing a hash that is not
  in a list succeeds.
- `verify_erased`: ``[]``; the connector declares ``write_only`` and the runner records that the removal
  cannot be verified by re-query.

The contract's `erase(decisions)` gets refs, not the subject, and a list ref does not say whom to remove:
`erase` takes an optional ``subject=`` and otherwise uses the subject its `discover` saw (refusing if it saw
more than one, or none: a runner that resumes after a crash between discovery and erasure must pass it).

Hashing (section 4): trim, lower-case, SHA-256 of the UTF-8 bytes, lower-case hex. Dots in gmail.com /
googlemail.com local parts are kept (Google does not require removing them). The Data Manager mode removes
all whitespace, including inside the address, before hashing, as Data Manager normalises.

Credentials by environment variable name only: the OAuth client (`oauth.client_id_env`,
`oauth.client_secret_env`), a refresh token (`oauth.refresh_token_env`; exchanged at `oauth.token_url` for
an access token, kept for the process's connectors of the same OAuth client (one exchange an hour, not
one a request), refreshed before it expires and once more on a 401), and the developer token
(`developer_token_env`, Ads mode only).

Pacing and retries (`connectors.http`): a client-side window (`rate_limit`); retries of 429
``RESOURCE_TEMPORARILY_EXHAUSTED`` (waiting the ``retryDelay`` Google puts in the body), 5xx, resets and
timeouts. A 429 whose ``retryDelay`` is longer than `retry_max_wait` (the daily ``RESOURCE_EXHAUSTED`` of a
developer token, hours away) is fatal and not retried, as are a refused developer token or access token and
Customer Match refused to the developer token.

Neither the address nor its hash ever reaches an exception, a log or an outcome: errors name the system,
the operation, the list's resource name and Google's status and error codes only (never Google's free
text), and are raised outside ``except`` blocks so the `requests` exception is not chained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.google_ads.connector import GoogleAdsApiError, GoogleAdsConnector
from connectors.google_ads.data_manager import DataManagerConnector, data_manager_hash
from connectors.google_ads.jobs import OfflineJobsConnector, customer_match_hash
from connectors.google_ads.settings import GoogleAdsSettings

__all__ = ["DataManagerConnector", "GoogleAdsApiError", "GoogleAdsConnector", "GoogleAdsSettings",
           "OfflineJobsConnector", "create", "customer_match_hash", "data_manager_hash"]


def create(system: str, settings: Mapping[str, Any]) -> GoogleAdsConnector:
    """Build the connector for one system (the registry's entry point): the mode's class. Makes no call.

    Raises:
        ConnectorConfigError: bad settings, or an environment variable they name is unset.
    """
    data_manager = isinstance(settings, Mapping) and settings.get("mode") == "data_manager"
    return (DataManagerConnector if data_manager else OfflineJobsConnector).create(system, settings)
