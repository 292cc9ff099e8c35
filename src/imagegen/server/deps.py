"""FastAPI dependencies shared by every router, as ``Annotated`` aliases: a handler asks for ``queue: Queue``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagegen.server.catalog import ModelCatalog
from imagegen.server.jobs.queue import JobQueue
from imagegen.server.services import Services
from imagegen.server.settings import ServerSettings
from imagegen.server.upscalers import UpscalerCatalog


def get_services(request: Request) -> Services:
    """The app's :class:`Services` (started by the app's lifespan)."""
    services: Services = request.app.state.services
    return services


def get_queue(request: Request) -> JobQueue:
    return get_services(request).queue


def get_catalog(request: Request) -> ModelCatalog:
    return get_services(request).catalog


def get_settings(request: Request) -> ServerSettings:
    return get_services(request).settings


def get_upscalers(request: Request) -> UpscalerCatalog:
    return get_services(request).upscalers


ServicesDep = Annotated[Services, Depends(get_services)]
Queue = Annotated[JobQueue, Depends(get_queue)]
Catalog = Annotated[ModelCatalog, Depends(get_catalog)]
Settings = Annotated[ServerSettings, Depends(get_settings)]
Upscalers = Annotated[UpscalerCatalog, Depends(get_upscalers)]
