"""Dependencies every router uses, named like the types they give."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.settings import Settings
from app.web.offload import Offload


def app_settings(request: Request) -> Settings:
    """The settings the app was made with (``create_app(Settings(...))``), not the environment's."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


def offload(request: Request) -> Offload:
    """The app's workers for cold torch work (``app.web.offload``), made once by the composition root."""
    return request.app.state.offload


OffloadDep = Annotated[Offload, Depends(offload)]
