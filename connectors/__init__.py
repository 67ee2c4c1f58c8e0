"""System connectors: one module per vendor, all implementing `dsr.contract.Connector`."""
