"""``python -m bench.serve MODULE``: serve an ASGI app as ``make run`` serves ours (``python -m app``:
``app.http.serving.uvicorn_options``, its protocol included), so the baseline and the app run under the
same server. On the port MRE_PORT names, without an access log (a line per request is the log's
cost, not the server's)."""

import sys

import uvicorn

from app.http.serving import uvicorn_options
from app.settings import get_settings

if __name__ == "__main__":
    options = uvicorn_options(get_settings())
    uvicorn.run(sys.argv[1], **{**options, "access_log": False, "log_level": "warning", "workers": 1})
