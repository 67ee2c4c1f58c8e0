"""The doors: how people and other programs reach the service (the `dsr` CLI, the HTTP API with the
officers' console, the auditor's page and the privacy center, and the OpenDSR controller client).

Doors parse, authorise and present; what they ask for is done by `dsr.service`.
"""
