"""The doctor's caps: its limits read from Settings one field each, inspections and uploads at a
time at their boundary (n taken, the n+1th waits or is refused), the feature switch."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.doctor import caps
from app.doctor.report import UploadError
from app.settings import Settings
from tests.support.aio import run
from tests.support.faces import FACES, Faces

# Every cap the doctor reads, as a Settings field, with a value that is no default.
FIELDS = {
    "checkpoint_max_bytes": 11,
    "checkpoint_header_max_bytes": 12,
    "checkpoint_max_entries": 13,
    "checkpoint_legacy_max_bytes": 14,
    "checkpoint_pickle_max_bytes": 15,
    "checkpoint_memory_bytes": 16,
    "checkpoint_cpu_seconds": 17,
    "checkpoint_wall_seconds": 18.0,
    "checkpoint_report_max_bytes": 19,
    "torch_threads": 3,
}


def test_the_limits_and_budget_are_the_settings_fields() -> None:
    settings = Settings(**FIELDS)
    limits, budget = dataclasses.asdict(caps.limits(settings)), dataclasses.asdict(caps.budget(settings))
    assert limits == {
        "max_bytes": 11,
        "header_max_bytes": 12,
        "max_entries": 13,
        "legacy_max_bytes": 14,
        "pickle_max_bytes": 15,
    }
    assert budget == {
        "memory_bytes": 16,
        "cpu_seconds": 17,
        "wall_seconds": 18.0,
        "report_max_bytes": 19,
        "threads": 3,
    }
    # a route that may take two checkpoints (a comparison) takes twice the bytes
    assert caps.body_caps(settings) == {
        "/api/checkpoints": 11 + caps.SLACK,
        "/api/checkpoints/fix": 11 + caps.SLACK,
        "/checkpoints/fix": 11 + caps.SLACK,
        "/checkpoints": 22 + caps.SLACK,
        "/api/checkpoints/compare": 22 + caps.SLACK,
    }


def test_n_uploads_at_a_time_and_the_next_refused_at_once() -> None:
    uploads = caps.InProgress(2)
    with uploads.taken(), uploads.taken():
        with pytest.raises(UploadError) as refused, uploads.taken():
            pass
        assert refused.value.status == 503 and "MRE_CHECKPOINT_UPLOADS" in refused.value.message
    with uploads.taken():  # both slots free again
        assert uploads.active == 1


def test_n_inspections_at_a_time_and_the_next_waits_then_503() -> None:
    async def scenario() -> None:
        slots = caps.Slots(1, wait=0.2)
        released = asyncio.Event()

        async def holder() -> None:
            async with slots.taken():
                await released.wait()

        task = asyncio.create_task(holder())
        await asyncio.sleep(0)
        with pytest.raises(UploadError) as refused:
            async with slots.taken():
                pass
        assert refused.value.status == 503
        released.set()
        await task
        async with slots.taken():  # the slot came back
            assert slots.active == 1

    run(scenario())


def test_the_switch_and_the_torch_floor() -> None:
    with pytest.raises(UploadError) as off:
        caps.check_available(Settings(checkpoints=False))
    assert off.value.status == 404 and "MRE_CHECKPOINTS" in off.value.message
    caps.check_available(Settings())  # this torch is new enough


# Each cap at its boundary on both faces of the doctor (tests/support/faces.py): a file exactly at
# the cap is read, one unit more is refused (413; mre: exit 2), with the same words on both.


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Faces:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return Faces(request.param, uploads)


def tensors(path: Path, count: int) -> Path:
    save_file({f"t{i}": torch.zeros(1) for i in range(count)}, path)
    return path


def zip_member(path: Path, suffix: str) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as archive:
        return next(m for m in archive.infolist() if m.filename.endswith(suffix))


def test_a_file_of_the_cap_in_bytes_is_read_and_one_byte_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tensors(tmp_path / "m.safetensors", 3)
    size = file.stat().st_size
    assert face.inspect([file], checkpoint_max_bytes=size).accepted
    assert face.inspect([file], checkpoint_max_bytes=size - 1).refused(f"over the cap of {size - 1} bytes")


def test_a_safetensors_header_of_the_cap_is_read_and_one_byte_more_refused(
    face: Faces, tmp_path: Path
) -> None:
    file = tensors(tmp_path / "m.safetensors", 3)
    length = struct.unpack("<Q", file.read_bytes()[:8])[0]
    assert face.inspect([file], checkpoint_header_max_bytes=length).accepted
    refused = face.inspect([file], checkpoint_header_max_bytes=length - 1)
    assert refused.refused(f"safetensors header of {length} bytes is over the cap of {length - 1} bytes")


def test_the_cap_of_tensors_is_read_and_one_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tensors(tmp_path / "m.safetensors", 5)
    assert face.inspect([file], checkpoint_max_entries=5).accepted
    assert face.inspect([file], checkpoint_max_entries=4).refused("5 tensors; at most 4")


def test_the_cap_of_entries_in_a_torch_file_is_read_and_one_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tmp_path / "values.pt"
    torch.save({f"v{i}": i for i in range(30)}, file)  # 30 values: more than the zip's members
    assert face.inspect([file], checkpoint_max_entries=30).accepted
    assert face.inspect([file], checkpoint_max_entries=29).refused("more than 29 entries")


def test_the_cap_of_zip_members_is_read_and_one_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1)}, file)
    with zipfile.ZipFile(file) as archive:
        members = len(archive.infolist())  # data.pkl, the tensor, version, byteorder...: more than entries
    assert face.inspect([file], checkpoint_max_entries=members).accepted
    assert face.inspect([file], checkpoint_max_entries=members - 1).refused(
        f"the zip holds {members} members; at most {members - 1}"
    )


def test_a_pickle_of_the_cap_is_read_and_one_byte_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1), "step": 3}, file)
    size = zip_member(file, "data.pkl").file_size
    assert face.inspect([file], checkpoint_pickle_max_bytes=size).accepted
    refused = face.inspect([file], checkpoint_pickle_max_bytes=size - 1)
    assert refused.refused(f"declares {size} bytes once unpacked")


def test_a_legacy_file_of_the_cap_is_read_and_one_byte_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(4)}, file, _use_new_zipfile_serialization=False)
    size = file.stat().st_size
    assert face.inspect([file], checkpoint_legacy_max_bytes=size).accepted
    refused = face.inspect([file], checkpoint_legacy_max_bytes=size - 1)
    assert refused.refused(f"{size} bytes in torch's legacy format", f"of {size - 1} bytes")


def test_a_report_of_the_cap_is_sent_and_one_byte_more_refused(face: Faces, tmp_path: Path) -> None:
    file = tensors(tmp_path / "m.safetensors", 3)
    size = len(face.inspect([file]).said.encode())  # the JSON report, as this face names the file
    assert face.inspect([file], checkpoint_report_max_bytes=size).accepted
    refused = face.inspect([file], checkpoint_report_max_bytes=size - 1)
    assert refused.refused(f"over the cap of {size - 1} bytes (MRE_CHECKPOINT_REPORT_MAX_BYTES)")


def test_each_checkpoint_compared_has_the_cap_in_bytes(face: Faces, tmp_path: Path) -> None:
    a, b = tensors(tmp_path / "a.safetensors", 3), tensors(tmp_path / "b.safetensors", 4)
    size = b.stat().st_size  # the larger: the cap is per checkpoint, not on the two together
    assert size > a.stat().st_size
    assert face.compare([a], [b], checkpoint_max_bytes=size).accepted
    assert face.compare([a], [b], checkpoint_max_bytes=size - 1).refused(f"over the cap of {size - 1} bytes")
