"""The installed package serves on its own: the wheel, in a fresh venv, run from an empty directory.

The fresh venv gets the project's wheel only; torch and the other dependencies come from this
venv's site-packages through a .pth line (installing torch again would cost a minute and a GB).
That line adds the directory without processing its .pth files, so the checkout's editable
install is not there: ``app`` can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.browser import ROOT, free_port, wait_healthy

pytestmark = pytest.mark.servers  # starts server processes (left out of mutation runs)

# What a clone has that the build reads; nothing installed or generated comes along.
SOURCES = ("app", "templates", "static", "lessons", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, "."],
        cwd=source,
        check=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_wheel_carries_templates_static_files_lessons_and_catalogs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("templates", "static", "lessons"):
        shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / name).rglob("*") if p.is_file()}
        assert {f"app/{n}" for n in shipped} <= names
    assert "app/locale/zh_CN/LC_MESSAGES/messages.po" in names
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mre = app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()  # the doctor's command


def test_installed_wheel_serves_from_an_empty_directory(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel], check=True
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    code = "import app; print(app.__file__)"
    where = subprocess.run([python, "-c", code], cwd=empty, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(site), where.stdout  # the wheel's copy, not the checkout's

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRE_")} | {"MRE_PORT": str(port)}
    proc = subprocess.Popen([python, "-m", "app"], cwd=empty, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base + "/api/health")
        with urllib.request.urlopen(base + "/") as page:
            html = page.read().decode()
        assert page.status == 200 and 'id="named-parameters"' in html
        with urllib.request.urlopen(base + "/?lang=zh-CN") as page:
            assert '<html lang="zh-CN"' in page.read().decode()
        with urllib.request.urlopen(base + "/lessons/saving-and-loading?step=3&reveal=1") as page:
            assert "Unexpected key(s) in state_dict" in page.read().decode()  # a lesson, from the wheel
        with urllib.request.urlopen(base + "/static/app.css") as css:
            assert css.status == 200 and css.read() == (ROOT / "static" / "app.css").read_bytes()
    finally:
        proc.terminate()
        proc.wait(10)
