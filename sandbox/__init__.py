"""Loopback emulators of the vendor systems, with seed data: they know only the vendor side."""
