"""Shared fixtures: the public ones from capture_ext.testing plus test-suite helpers."""

pytest_plugins = ["capture_ext.testing.pytest_plugin"]
