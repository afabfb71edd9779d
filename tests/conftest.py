"""Shared fixtures: the simulated cluster and friends live in tests/support/plugin.py."""

pytest_plugins = ["tests.support.plugin"]
