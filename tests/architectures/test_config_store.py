"""The pasted configs the lab opens: kept under the sha256 of their canonical JSON, with the count the
isolated child made, refused over the lab's cap (at the cap accepted, one more refused, on keeping
and again on every read), unknown digests a 404 saying how to open it again, the folder bounded
and never one that others may write."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from app.architectures import config_store, configs, isolated
from app.architectures.catalogue import ArchitectureError
from app.architectures.config_store import ConfigStore, ConfigTooLarge, digest, elements, preset_id
from app.lab.spec import UnknownPreset
from app.langs import ZH
from tests.support.architectures import LLAMA_CONFIG


@pytest.fixture(autouse=True)
def fresh() -> None:
    # Each test keeps its own counts under the same digests: no preset built in another test.
    config_store._presets.clear()


def config(**changes: object) -> dict:
    return configs.read(json.dumps({**LLAMA_CONFIG, **changes}))


def test_the_digest_is_the_sha256_of_the_canonical_json() -> None:
    checked = config()
    raw = json.dumps(checked, separators=(",", ":"), sort_keys=True).encode()
    expected = base64.b32encode(hashlib.sha256(raw).digest()).decode().lower().rstrip("=")
    assert digest(checked) == expected and len(expected) == 52
    # The same config pasted with its keys in another order and the keys that never change a tensor.
    shuffled = dict(reversed(list({**LLAMA_CONFIG, "transformers_version": "4.0"}.items())))
    assert digest(configs.read(json.dumps(shuffled))) == expected
    assert len(preset_id(expected)) <= 64  # a lab preset id's length
    # A nested object's keys keep the order pasted: the digest reads them sorted all the same.
    scaling = {"rope_type": "linear", "factor": 2.0}
    one = configs.read(json.dumps({**LLAMA_CONFIG, "rope_scaling": scaling}))
    other = configs.read(json.dumps({**LLAMA_CONFIG, "rope_scaling": dict(reversed(scaling.items()))}))
    assert list(one["rope_scaling"]) != list(other["rope_scaling"]) and digest(one) == digest(other)


def test_kept_and_read_back_with_its_count(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "store", max_files=10, max_elements=1000)
    key = store.put(config(), 1000)  # at the cap: kept
    assert store.get(key) == (config(), 1000)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [f"{key}.json"]
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o700
    # Another worker, or this one after a restart: the same folder gives the same preset.
    other = ConfigStore(tmp_path / "store", max_files=10, max_elements=1000)
    assert other.get(key) == (config(), 1000)


def test_over_the_cap_is_refused_naming_it_on_keeping_and_on_reading(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, max_elements=1000)
    with pytest.raises(ConfigTooLarge) as refused:
        store.put(config(), 1001)
    assert refused.value.status == 413 and list(tmp_path.iterdir()) == []
    assert refused.value.loc == ("preset",)  # the lab spec's field, as the API's detail names it
    said = refused.value.message
    assert "1,001 elements" in said and "cap of 1,000 (MRE_LAB_CONFIG_MAX_ELEMENTS)" in said
    assert "MRE_LAB_CONFIG_MAX_ELEMENTS" in refused.value.text(ZH) and "上限 1,000" in refused.value.text(ZH)
    # Kept under a larger cap, then read by a server whose cap is lower: refused too.
    key = ConfigStore(tmp_path, max_elements=5000).put(config(), 4000)
    with pytest.raises(ConfigTooLarge, match=r"4,000 elements, over the lab's cap of 1,000"):
        store.preset(preset_id(key))
    # Opened first by a server whose cap allows it (its preset built and kept in this process),
    # then asked of the lower cap: still refused, naming that cap.
    ConfigStore(tmp_path, max_elements=5000).preset(preset_id(key))
    with pytest.raises(ConfigTooLarge, match=r"4,000 elements, over the lab's cap of 1,000"):
        store.preset(preset_id(key))


def test_an_unknown_or_malformed_or_altered_digest_is_a_404(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, max_files=1234)
    for key in ("a" * 52, "not-a-digest", "../" + "a" * 49, "", "b" * 500):
        with pytest.raises(UnknownPreset, match="no such config is kept here") as refused:
            store.preset(preset_id(key))
        said = refused.value.message
        assert refused.value.status == 404 and "MRE_LAB_CONFIG_DIR" in said
        assert "keeps the last 1,234 configs" in said  # this server's cap
        assert said.startswith(preset_id(key)[:80] + ": ")  # the id asked for, cut to 80 characters
    key = store.put(config(), 10)
    path = tmp_path / f"{key}.json"
    path.write_text(json.dumps({"config": config(hidden_size=128), "elements": 10}))
    assert store.get(key) is None  # what it holds is not what its name says
    path.write_text("{not json")
    assert store.get(key) is None


def test_the_least_recently_opened_go_first(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path, max_files=2)
    keys = [store.put(config(vocab_size=v), 10) for v in (100, 200)]
    for age, key in zip((300, 200), keys, strict=True):  # the first opened longest ago
        os.utime(tmp_path / f"{key}.json", ns=(0, (10**9 - age) * 10**9))
    store.put(config(vocab_size=100), 10)  # opened again: now the most recent
    third = store.put(config(vocab_size=300), 10)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted([keys[0], third])


def test_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    with pytest.raises(ArchitectureError, match="writable by no one else") as refused:
        ConfigStore(tmp_path).put(config(), 10)
    assert refused.value.status == 503


def test_the_count_is_the_childs_parameters_and_buffers(tmp_path: Path) -> None:
    checked = config()
    report = isolated.report(checked, {}, [])
    model = configs.build(checked, "meta")
    assert elements(report) == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers()
    )
    store = ConfigStore(tmp_path, max_elements=elements(report))
    preset = store.preset(preset_id(store.put(checked, elements(report))))
    assert preset.member_names == (*dict(model.named_parameters()), *dict(model.named_buffers()))
    assert config_store.default_folder().name == f"mre-lab-configs-{os.getuid()}"
