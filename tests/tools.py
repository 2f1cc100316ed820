"""Command-line tools some tests run: required in CI, skipped with a hint elsewhere."""

import os
import shutil

import pytest


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run must install Debian's {package} package")
        pytest.skip(f"{tool} not installed (apt-get install {package})")
    return path
