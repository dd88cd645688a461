"""Data sources (get verified bytes) and data modules (turn them into tensors)."""
