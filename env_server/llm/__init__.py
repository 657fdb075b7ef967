"""Simulator backends behind one protocol: heuristic (no model) and transformers."""
