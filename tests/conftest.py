"""Shared fixtures: the simulated cluster and friends live in deepseek_operator.sim.testing."""

pytest_plugins = ["deepseek_operator.sim.testing"]
