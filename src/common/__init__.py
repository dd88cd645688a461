"""What every layer of the suite may use: the user-error types (errors.py) and safe file writes (files.py)."""
