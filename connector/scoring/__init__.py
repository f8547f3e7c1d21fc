"""Turning metric values into scores: schemes, bands, the engine, overrides."""
