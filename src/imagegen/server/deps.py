"""FastAPI dependencies shared by every router: the service and the settings of the running app."""

from __future__ import annotations

from fastapi import Request

from imagegen.server.service import JobService
from imagegen.server.settings import ServerSettings


def get_service(request: Request) -> JobService:
    """The app's :class:`JobService` (started by the app's lifespan)."""
    return request.app.state.service


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings
