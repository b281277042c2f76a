"""`python -m queue_api`: serve the /queue API on QUEUE_API_HOST:QUEUE_API_PORT (127.0.0.1:8765)."""

from __future__ import annotations

import uvicorn

from queue_api.app import create_app
from queue_api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
