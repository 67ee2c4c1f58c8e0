"""dsr-pipeline's domain and service layer.

Nothing in this package imports Prefect or a vendor SDK: connectors and flows depend on it,
never the reverse.
"""

__version__ = "0.1.0"
