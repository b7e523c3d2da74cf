"""Shallow hashing methods on feature vectors (LSH, ITQ, SITQ, SDH, KSH)."""
