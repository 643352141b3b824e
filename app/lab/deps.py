"""The lab's route dependency, for every feature's routes that read a lab spec (the lab, the doctor's
module to load into, a lesson's or a class's state): what a lab may ask of this server."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.lab.query import Bounds
from app.web.deps import SettingsDep


def lab_bounds(settings: SettingsDep) -> Bounds:
    """This process's devices and its app's custom tensor cap (MRE_CUSTOM_MAX_ELEMENTS)."""
    return Bounds.here(settings.custom_max_elements)


BoundsDep = Annotated[Bounds, Depends(lab_bounds)]
