"""The queue against the session's real Prefect server, with the project's deployments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def deployed(prefect_server: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "deployments", "setup"],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )
