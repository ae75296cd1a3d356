"""pytest fixtures that capture-ext offers to its own tests and to plugin authors.

Use it with ``pytest_plugins = ["capture_ext.testing.pytest_plugin"]`` in a ``conftest.py``.
"""
