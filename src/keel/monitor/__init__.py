"""Watching decisions: trust metrics per flow (and, to come, drift and behaviour monitors)."""
