"""The doctor's two faces, for the tests every cap of the doctor runs against: POST /api/checkpoints
(and /api/checkpoints/compare) of an app made with the caps as Settings, and ``mre inspect`` run in
this process with the same caps as MRE_* variables (no upload layer in front of it)."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from fastapi.testclient import TestClient

from app import cli
from app.main import create_app
from app.settings import Settings

FACES = ["api", "cli"]


@dataclass(frozen=True)
class Answer:
    accepted: bool  # a report (200; mre exits 0 or 1), or a refusal (4xx, 5xx; mre exits 2)
    status: int  # the HTTP status, or mre's exit status
    said: str  # the refusal's words, or the report as JSON

    def refused(self, *words: str) -> bool:
        """Refused as too large (413; mre: bad input), saying each of ``words`` (mre's console
        wraps its lines, a long path included: spaces and line ends are left out of the match)."""
        said = "".join(self.said.split())
        too_large = self.status in (413, cli.BAD_INPUT)
        return not self.accepted and too_large and all("".join(w.split()) in said for w in words)


class Faces:
    """One face of the doctor, asked with some caps changed (Settings field names)."""

    def __init__(self, kind: str, uploads: Path) -> None:
        self.kind, self.uploads = kind, uploads

    def inspect(self, files: list[Path], **caps: Any) -> Answer:
        return self._ask(files, [], caps)

    def compare(self, a: list[Path], b: list[Path], **caps: Any) -> Answer:
        return self._ask(a, b, caps)

    def _ask(self, a: list[Path], b: list[Path], caps: dict[str, Any]) -> Answer:
        if self.kind == "api":
            return self._api(a, b, caps)
        return self._cli(a, b, caps)

    def _api(self, a: list[Path], b: list[Path], caps: dict[str, Any]) -> Answer:
        parts = [("file", (f.name, f.read_bytes())) for f in a]
        parts += [("other", (f.name, f.read_bytes())) for f in b]
        path = "/api/checkpoints/compare" if b else "/api/checkpoints"
        with TestClient(create_app(Settings(checkpoint_tmp_dir=str(self.uploads), **caps))) as client:
            answer = client.post(path, files=parts)
        ok = answer.status_code == 200
        return Answer(ok, answer.status_code, answer.text if ok else answer.json()["detail"])

    def _cli(self, a: list[Path], b: list[Path], caps: dict[str, Any]) -> Answer:
        args = ["inspect", *map(str, a), *(["--compare", *map(str, b)] if b else []), "--json"]
        variables = {f"MRE_{name.upper()}": str(value) for name, value in caps.items()}
        out, err = io.TextIOWrapper(io.BytesIO(), write_through=True), io.StringIO()
        with (
            mock.patch.dict(os.environ, variables),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            status = cli.main(args)
        ok = status in (cli.LOADS, cli.DOES_NOT)
        said = out.buffer.getvalue().decode().strip() if ok else err.getvalue()  # type: ignore[attr-defined]
        return Answer(ok, status, said)
