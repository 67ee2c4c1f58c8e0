"""dsr-pipeline's domain and service layer.

Nothing in this package imports Prefect or a vendor SDK: connectors and flows depend on it,
never the reverse.
"""

import logging as _logging

__version__ = "0.1.0"

# botocore logs every request and response body at DEBUG, and ours carry addresses (an SQS intake
# message, a subject package put to S3). Logs must never hold personal data, so these loggers are
# held at INFO whatever the root level is (connectors.base does the same for the vendor clients).
for _name in ("botocore", "boto3", "s3transfer"):
    _logging.getLogger(_name).setLevel(_logging.INFO)
