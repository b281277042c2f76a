"""The notification block types of this project, for Prefect to register.

Prefect imports this module in every process it starts (server, workers) through the
`prefect.collections` entry point in pyproject.toml; that is how the server's actions service
finds the block class behind a saved block document."""

from __future__ import annotations

from deployments.email import EmailNotification
from deployments.telegram import TelegramBot

__all__ = ["EmailNotification", "TelegramBot"]
