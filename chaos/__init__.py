"""Chaos campaigns: crash-and-resume, vendor fault storms, concurrent runs.

Run one with `python -m chaos.<name>`; `make chaos` runs them all. See chaos/README.md.
"""
