"""Mappings: reading the YAML, checking it, compiling it for the engine."""
