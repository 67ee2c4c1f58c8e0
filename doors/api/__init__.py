"""The HTTP door: a FastAPI app over the service layer (officers, auditors, subjects)."""
