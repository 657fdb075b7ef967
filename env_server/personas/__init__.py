"""Persona pack schema and loader (the YAML packs themselves live in the top-level personas/)."""
