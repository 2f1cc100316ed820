import logging

import pytest


@pytest.fixture(autouse=True)
def restore_root_logging():
    """The command line installs its own root handler; undo it after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
