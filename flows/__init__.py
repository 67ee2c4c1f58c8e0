"""Prefect flows: thin orchestration over the service layer (dsr/) and the connectors."""
