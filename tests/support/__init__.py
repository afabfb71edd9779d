"""Test support: the pytest plugin over the simulated cluster and helpers (not in the wheel)."""
