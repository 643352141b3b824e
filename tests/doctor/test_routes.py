"""POST /api/checkpoints: safety, each proven with a crafted file, and the answers it gives."""

from __future__ import annotations

import asyncio
import io
import json
import tracemalloc
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app.doctor import runs as inspections
from app.main import create_app
from app.settings import Settings
from tests.support.crafted import malicious_checkpoint

CAP = 1024 * 1024


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def api(tmp_dir: Path) -> Iterator[TestClient]:
    """An app whose uploads land in ``tmp_dir`` (so the test sees what is left), capped at 1 MiB."""
    tmp_dir.mkdir()
    settings = Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_max_bytes=CAP)
    with TestClient(create_app(settings)) as client:
        yield client
    assert list(tmp_dir.iterdir()) == []  # temporary files removed on every path


def saved(obj: object, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def post(api: TestClient, content: bytes, query: str = "", multipart: bool = True):
    if multipart:
        return api.post("/api/checkpoints" + query, files={"file": ("model.pt", content)})
    return api.post(
        "/api/checkpoints" + query, content=content, headers={"content-type": "application/octet-stream"}
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(
    api: TestClient, tmp_path: Path, legacy: bool
) -> None:
    marker = tmp_path / "pwned"
    content = malicious_checkpoint(marker, legacy)
    response = post(api, content)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "weights_only=True) refused it: UnpicklingError" in detail
    assert "an object of builtins.exec at x" in detail  # the global, and where it sits
    assert "\x1b" not in detail  # torch's advice comes with terminal colour codes: never in JSON
    assert not marker.exists()
    # The file really is malicious: torch's full unpickler runs it.
    torch.load(io.BytesIO(content), weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("multipart", [True, False])
def test_both_ways_of_sending_a_file(api: TestClient, multipart: bool) -> None:
    response = post(api, saved({"w": torch.ones(2, 3)}), multipart=multipart)
    assert response.status_code == 200
    assert [(t["name"], t["shape"]) for t in response.json()["tensors"]] == [("w", [2, 3])]


def test_load_into_a_spec_from_the_query(api: TestClient) -> None:
    state = {"linear.weight": torch.ones(3, 3), "linear.bias": torch.ones(3)}
    response = post(
        api, saved({"model": state, "step": 10}), "?preset=custom&style.w=buffer&state_dict=model"
    )
    assert response.status_code == 200
    load = response.json()["load"]
    assert load["state_dict"] == "model" and load["missing_keys"] == ["w"] and load["unexpected_keys"] == []
    assert load["strict"].startswith(
        "RuntimeError: Error(s) in loading state_dict for CustomModule:\n\tMissing key(s)"
    )


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("?preset=nope", 404, "unknown preset 'nope'"),
        ("?preset=testmodel&style.buffer1=nope", 422, "unknown style 'nope'"),
        ("?state_dict=a&state_dict=b", 422, "given more than once"),
        ("?preset=testmodel&state_dict=opt", 422, "no state_dict at 'opt'"),
    ],
)
def test_bad_spec_is_refused(api: TestClient, query: str, status: int, message: str) -> None:
    response = post(api, saved({"w": torch.ones(2)}), query)
    assert response.status_code == status
    assert message in str(response.json()["detail"])


def test_upload_over_the_cap_is_413(api: TestClient) -> None:
    big = saved({"w": torch.zeros(CAP // 4 + 1024)})
    for multipart in (True, False):
        response = post(api, big, multipart=multipart)
        assert response.status_code == 413
        assert str(CAP) in response.json()["detail"]


def test_upload_over_the_cap_without_content_length_is_413(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0" * 64 * 1024  # 2.5 MiB, never announced

    response = api.post(
        "/api/checkpoints", content=chunks(), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 413


def stream(app: object, body: bytes, chunk: int = 64 * 1024, disconnect_at: int | None = None) -> dict:
    """POST ``body`` to /api/checkpoints through ASGI directly, ``chunk`` bytes a message (the test
    client would gather it into one); ``disconnect_at``: the client goes away after that many bytes."""
    offsets = iter(range(0, len(body) + 1, chunk))

    async def receive() -> dict:
        offset = next(offsets, len(body))
        if disconnect_at is not None and offset >= disconnect_at:
            return {"type": "http.disconnect"}
        piece = body[offset : offset + chunk]
        return {"type": "http.request", "body": piece, "more_body": offset + chunk < len(body)}

    response: dict = {"body": b""}

    async def send(message: dict) -> None:
        response.setdefault("status", message.get("status"))
        response["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/checkpoints",
        "raw_path": b"/api/checkpoints",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/octet-stream"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    # In a thread of its own: the browser tests' playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()  # type: ignore[operator]
    return response


def test_upload_is_streamed_to_disk_not_held_in_memory(tmp_dir: Path) -> None:
    tmp_dir.mkdir()
    app = create_app(Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_max_bytes=64 * CAP))
    body = saved({"w": torch.zeros(8 * CAP)})  # 32 MiB
    tracemalloc.start()
    response = stream(app, body)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response["status"] == 200, response
    assert json.loads(response["body"])["total_bytes"] == 32 * CAP
    assert peak < 4 * CAP, f"{peak} bytes allocated at the peak for a {len(body)}-byte upload"
    assert list(tmp_dir.iterdir()) == []


def test_a_client_gone_mid_upload_leaves_no_file(tmp_dir: Path) -> None:
    tmp_dir.mkdir()
    app = create_app(Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_max_bytes=64 * CAP))
    response = stream(app, saved({"w": torch.zeros(CAP)}), disconnect_at=CAP)
    assert response["status"] == 400  # said, though nobody is left to read it
    assert list(tmp_dir.iterdir()) == []
    assert app.state.inspector.slots.active == 0  # type: ignore[attr-defined]


def test_zip_declaring_more_than_the_cap_is_413(api: TestClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (4 * CAP))  # a few KiB on the wire
    assert len(buffer.getvalue()) < CAP
    response = post(api, buffer.getvalue())
    assert response.status_code == 413
    assert (
        f"the zip declares {4 * CAP + 0} bytes once unpacked, over the cap of {CAP} bytes"
        in response.json()["detail"]
    )


def test_safetensors_header_over_the_cap_is_413(tmp_dir: Path, tmp_path: Path) -> None:
    tmp_dir.mkdir()
    save_file({f"t{i}": torch.zeros(1) for i in range(100)}, tmp_path / "m.safetensors")
    settings = Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_header_max_bytes=1024)
    with TestClient(create_app(settings)) as api:
        response = post(api, (tmp_path / "m.safetensors").read_bytes())
    assert response.status_code == 413
    assert (
        "safetensors header of" in response.json()["detail"]
        and "cap of 1024 bytes" in response.json()["detail"]
    )
    assert list(tmp_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n not a model", "not a safetensors or torch checkpoint"),
        (b"PK\x03\x04 truncated", "not a readable zip"),
    ],
)
def test_garbage_and_truncated_files_are_422(api: TestClient, content: bytes, message: str) -> None:
    response = post(api, content)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_truncated_torch_file_is_422(api: TestClient) -> None:
    whole = saved({"w": torch.ones(64)})
    response = post(api, whole[: len(whole) // 2])
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("headers", "content", "status", "message"),
    [
        ({"content-type": "text/plain"}, b"hi", 415, "multipart/form-data"),
        ({"content-type": "multipart/form-data"}, b"x", 422, "without a boundary"),
        ({"content-type": "multipart/form-data; boundary=zz"}, b"--zz\r\nbad", 422, "no file"),
    ],
)
def test_malformed_requests(
    api: TestClient, headers: dict, content: bytes, status: int, message: str
) -> None:
    response = api.post("/api/checkpoints", content=content, headers=headers)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_no_file_part_and_two_files(api: TestClient) -> None:
    response = api.post("/api/checkpoints", data={"preset": "testmodel"}, files={"other": ("a", b"x")})
    assert (response.status_code, response.json()["detail"]) == (
        422,
        "no file: send it in the multipart part named 'file'",
    )
    two = [("file", ("a.pt", b"x")), ("file", ("b.pt", b"y"))]  # several files: one sharded checkpoint
    response = api.post("/api/checkpoints", files=two)
    assert (
        response.status_code == 422 and "not a safetensors or torch checkpoint" in response.json()["detail"]
    )


def test_concurrent_inspections_are_bounded(tmp_dir: Path) -> None:
    tmp_dir.mkdir()
    settings = Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_slots=1, checkpoint_wait_seconds=0.2)
    with TestClient(create_app(settings)) as api:
        slots = api.app.state.inspector.slots  # type: ignore[attr-defined]
        slots.active = 1  # one inspection already running
        busy = post(api, saved({"w": torch.ones(2)}))
        slots.active = 0
        free = post(api, saved({"w": torch.ones(2)}))
    assert busy.status_code == 503 and "1 checkpoint inspections are running" in busy.json()["detail"]
    assert free.status_code == 200 and slots.active == 0
    assert list(tmp_dir.iterdir()) == []


def test_inspections_queue_for_a_slot(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three uploads at once with one slot: they wait their turn, one inspection at a time."""
    tmp_dir.mkdir()
    running, most = [0], [0]
    real = inspections.isolated.inspect_isolated

    async def slow(*args: object) -> bytes:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.2)
        running[0] -= 1
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(inspections.isolated, "inspect_isolated", slow)
    settings = Settings(checkpoint_tmp_dir=str(tmp_dir), checkpoint_slots=1, checkpoint_wait_seconds=5)
    with TestClient(create_app(settings)) as api, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: post(api, saved({"w": torch.ones(2)})).status_code, range(3)))
    assert answers == [200, 200, 200]
    assert most[0] == 1
    assert list(tmp_dir.iterdir()) == []


def test_the_feature_can_be_turned_off() -> None:
    with TestClient(create_app(Settings(checkpoints=False))) as api:
        response = post(api, saved({"w": torch.ones(2)}))
        page = api.get("/checkpoints")
    assert response.status_code == 404 and "turned off" in response.json()["detail"]
    assert page.status_code == 404 and "turned off" in page.text


def test_old_torch_is_refused(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.doctor.caps.torch_ok", lambda: False)
    response = post(api, saved({"w": torch.ones(2)}))
    assert response.status_code == 503 and "needs torch >= 2.10" in response.json()["detail"]


def test_other_routes_keep_the_small_body_cap(api: TestClient) -> None:
    response = api.post(
        "/api/lab", content=b"{" + b" " * 20000 + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def _at_least(installed: str, floor: tuple[int, ...]) -> bool:
    return tuple(int(p) for p in installed.split("+")[0].split(".")[: len(floor)]) >= floor


def test_versions_with_the_published_fixes() -> None:
    assert _at_least(torch.__version__, (2, 10))  # CVE-2025-32434, CVE-2026-24747 (weights_only)
    assert _at_least(version("python-multipart"), (0, 0, 18))  # CVE-2024-53981 (multipart DoS)
    assert _at_least(version("starlette"), (0, 47, 2))  # CVE-2024-47874, CVE-2025-54121 (uploads)


FILE_PART = b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.pt"\r\n\r\n'


@pytest.mark.parametrize("path", ["/api/checkpoints", "/checkpoints"])
@pytest.mark.parametrize(
    ("boundary", "body", "message"),
    [
        ("a" * 5000, b"x", "malformed multipart body"),  # python-multipart refuses it on construction
        ("a" * 257, b"x", "malformed multipart body"),
        ("B", b"--B\r\nContent-Disposition: form-data\r\n\r\nab\r\n--B--\r\n", "has no name"),
        ("B", b"--Bxx\r\n", "malformed multipart body"),  # refused while written
        ("B", FILE_PART + b"abc", "ends before its closing boundary"),  # the file may be cut short
        ("B", FILE_PART + b"abc\r\n--B\r\n", "ends before its closing boundary"),
    ],
)
def test_any_multipart_parser_error_is_422(
    api: TestClient, path: str, boundary: str, body: bytes, message: str
) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = api.post(path, content=body, headers=headers)
    assert response.status_code == 422, response.text[:300]
    assert message in (response.json()["detail"] if path.startswith("/api") else response.text)


def test_a_whole_multipart_body_is_still_accepted(api: TestClient) -> None:
    body = FILE_PART + saved({"w": torch.ones(2)}) + b"\r\n--B--\r\n"
    response = api.post(
        "/api/checkpoints", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert response.status_code == 200 and response.json()["tensors"][0]["shape"] == [2]


def test_a_lone_surrogate_in_a_name_is_said_plainly(api: TestClient) -> None:
    raw = b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    response = post(api, len(raw).to_bytes(8, "little") + raw + b"\0" * 4)
    assert response.status_code == 422
    assert (
        response.json()["detail"]
        == "tensor names, keys and metadata must be valid Unicode text (no lone surrogates)"
    )
    response = post(api, saved({"\ud800": torch.ones(1), "x\udfff": 3}))
    assert response.status_code == 422 and "no lone surrogates" in response.json()["detail"]


def test_the_fixed_checkpoint_is_a_download_that_loads_strictly(api: TestClient) -> None:
    from safetensors.torch import load

    from tests.support.checkpoints import ref

    model = ref("testmodel")
    wrapped = saved({f"module.{k}": v for k, v in model.state_dict().items()})
    response = api.post("/api/checkpoints/fix?preset=testmodel", files={"file": ("run7.pt", wrapped)})
    assert response.status_code == 200, response.text
    assert 'filename="run7.fixed.safetensors"' in response.headers["content-disposition"]
    fixed = load(response.content)
    ref("testmodel").load_state_dict(fixed, strict=True)
    assert all(torch.equal(fixed[k], v) for k, v in model.state_dict().items())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    refused = api.post(
        "/api/checkpoints/fix?preset=testmodel", files={"file": ("o.pt", saved(optimizer.state_dict()))}
    )
    assert refused.status_code == 409 and "not written: does not load" in refused.json()["detail"]
    page = api.post("/checkpoints/fix", data={"preset": "testmodel"}, files={"file": ("run7.pt", wrapped)})
    assert page.status_code == 200 and load(page.content).keys() == fixed.keys()
    page = api.post(
        "/checkpoints/fix?lang=zh-CN",
        data={"preset": "testmodel"},
        files={"file": ("o.pt", saved(optimizer.state_dict()))},
    )
    assert page.status_code == 409 and "text/html" in page.headers["content-type"]


def test_a_model_folder_loads_into_its_own_config(api: TestClient, tmp_path: Path) -> None:
    import transformers

    from app.architectures.catalogue import ARCHITECTURES

    config = transformers.GPT2Config(**ARCHITECTURES["gpt2_tiny"].config)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    parts = [("file", (p.name, p.read_bytes())) for p in sorted((tmp_path / "gpt2").iterdir())]
    report = api.post("/api/checkpoints", files=parts).json()
    assert report["load"]["config"] == "config.json"
    assert report["load"]["target"] == "GPT2LMHeadModel (config.json)"
    assert report["load"]["diagnosis"]["verdict"] == "fixed"  # save_pretrained kept one name of the tie
    assert any("generation_config.json" in note["en"] for note in report["notes"])


def test_each_checkpoint_of_a_comparison_has_the_cap_and_is_named(api: TestClient) -> None:
    half = saved({"w": torch.zeros(CAP // 4 * 3 // 4)})  # 3/4 of the cap each: 1.5 caps together
    both = [("file", ("a.pt", half)), ("other", ("b.pt", half))]
    assert api.post("/api/checkpoints/compare", files=both).status_code == 200
    big = saved({"w": torch.zeros(CAP // 4 + 64)})
    over = api.post("/api/checkpoints/compare", files=[("file", ("a.pt", half)), ("other", ("b.pt", big))])
    assert over.status_code == 413
    assert over.json()["detail"].startswith(f"the second checkpoint is {len(big)} bytes, over the cap")
    page = api.post("/checkpoints", files=both)
    assert page.status_code == 200


def test_the_page_takes_tar_files_and_folders(api: TestClient) -> None:
    from tests.support.html import parse

    page = parse(api.get("/checkpoints").text)
    assert ".tar" in page.find("input", id="checkpoint-file").attrs["accept"].split(",")
    assert "webkitdirectory" in page.find("input", id="checkpoint-folder").attrs
