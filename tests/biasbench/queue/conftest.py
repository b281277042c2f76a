"""The queue against the session's real Prefect server, with the project's deployments
(the `deployed` fixture of tests/conftest.py)."""
