"""Environment layer."""
