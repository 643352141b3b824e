"""``python -m app``: serve with the host, port and workers from Settings."""

import uvicorn

from app.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, workers=settings.workers)
