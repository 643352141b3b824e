"""The composition root: every feature's routes, the page kit's error handling and the edge's layers
put together, obeying the Settings it is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import CACHED_PATHS, CACHED_PREFIXES, create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_feature_is_served() -> None:
    served = [
        "/", "/api/lab?preset=testmodel", "/api/presets", "/api/health", "/checkpoints", "/api/architectures",
        "/architectures", "/architectures/llama_tiny", "/lessons", "/lessons/parameters-and-buffers", "/join",
        "/docs", "/openapi.json", "/static/app.css",
    ]  # fmt: skip
    with TestClient(create_app()) as client:
        for url in served:
            assert client.get(url).status_code == 200, url
        assert client.post("/rooms", data={"state": "/"}, follow_redirects=False).status_code == 303
    assert {"/", "/api/lab", "/lessons"} <= set(CACHED_PATHS) and "/lessons/" in CACHED_PREFIXES


def test_the_app_obeys_the_settings_it_is_made_with() -> None:
    url = "/api/lab?preset=custom&style.w=buffer&shape.w=20"
    with TestClient(create_app(Settings(custom_max_elements=20))) as small:
        assert small.get(url).status_code == 200
    with TestClient(create_app(Settings(custom_max_elements=19))) as smaller:
        refused = smaller.get(url)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["shapes", "w"]
    with TestClient(create_app(Settings(checkpoints=False))) as off:
        assert off.post("/api/checkpoints", content=b"x").status_code == 404
    with TestClient(create_app(Settings(architectures=False))) as off:
        assert off.get("/api/architectures").status_code == 404


def test_a_refusal_is_json_for_the_api_and_a_page_for_a_browser() -> None:
    with TestClient(create_app()) as client:
        api = client.get("/api/lab?preset=nope")
        page = client.get("/lessons/nope", headers={"accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_what_lives_for_ever_is_out_of_the_collectors_sight_once_started() -> None:
    # A full collection over torch, transformers and the app stalls every request for ~80 ms.
    code = (
        "import gc\n"
        "from fastapi.testclient import TestClient\n"
        "from app.main import create_app\n"
        "before = gc.get_freeze_count()\n"
        "with TestClient(create_app()):\n"
        "    pass\n"
        "print(before, gc.get_freeze_count(), len(gc.get_objects(2)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    before, frozen, oldest = map(int, out.stdout.split())
    assert before == 0 and frozen > 100_000 and oldest < frozen / 10


def test_the_warm_start_is_done_and_logged_before_the_first_request() -> None:
    """What the first visitor would wait for happens before the app answers: transformers and the
    catalogue (architectures on), the default lab page in each language (its templates compiled,
    the preset's class made), each timed in one log line; a GPU's context too where one exists."""
    code = (
        "import logging, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from app.main import create_app\n"
        "from app.lab import report\n"
        "from app.web.html import environment\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')\n"
        "with TestClient(create_app()) as client:\n"
        "    print('classes', report.module_class.cache_info().currsize)\n"
        "    print('modules', int('transformers' in sys.modules))\n"
        "    print('templates', *sorted(environment(lang).cache is not None and len(environment(lang).cache)"
        " for lang in ('en', 'zh-CN')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    lines = out.stdout.splitlines()
    warm = next(line for line in lines if line.startswith("warm start: "))
    assert "transformers and architectures" in warm and "default lab" in warm and warm.endswith(" s")
    facts = dict(
        line.split(" ", 1) for line in lines if line.split(" ", 1)[0] in ("classes", "modules", "templates")
    )
    assert int(facts["classes"]) >= 1 and facts["modules"] == "1"
    assert all(int(n) > 0 for n in facts["templates"].split())  # each language's templates compiled
    assert lines.index(warm) < next(i for i, line in enumerate(lines) if line.startswith("classes"))
