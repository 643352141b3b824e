"""``python -m app``: serve with the host, port, workers and connection limits from Settings."""

import uvicorn

from app.http.serving import uvicorn_options
from app.settings import get_settings

if __name__ == "__main__":
    uvicorn.run("app.main:app", **uvicorn_options(get_settings()))
