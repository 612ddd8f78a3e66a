"""Engines, databases and the running stack come from the project's shared fixtures."""

pytest_plugins = ["shared.testing.fixtures"]
