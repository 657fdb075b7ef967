"""Episode stores behind one protocol."""
