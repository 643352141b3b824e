"""/api/architectures and /architectures: the same reports as the domain, torch's figures on the
page, refusals as clear 4xx, the setting that turns them off, and transformers imported lazily."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import torch
import transformers
from fastapi.testclient import TestClient

from app.architectures import configs
from app.architectures.catalogue import ARCHITECTURES
from app.architectures.module_tree import module_tree
from app.architectures.saving import saving
from app.main import create_app
from app.settings import Settings
from tests.support.architectures import LLAMA_CONFIG, direct
from tests.support.html import parse


def test_list_and_trees(client: TestClient) -> None:
    listed = client.get("/api/architectures").json()
    assert [a["id"] for a in listed] == list(ARCHITECTURES)
    llama = next(a for a in listed if a["id"] == "llama_8b")
    assert llama["devices"] == ["meta"] and llama["translations"]["zh-CN"]["title"]
    assert {f["experiment"]: f["applies"] for f in llama["experiments"]}["step"] == "tiny"
    tree = client.get("/api/architectures/gpt2_tiny", params={"device": "cpu"}).json()
    model = direct("gpt2_tiny", "cpu")
    expected = module_tree(model)
    expected.saving = saving(model)
    assert tree == expected.model_dump(mode="json")
    assert tree["totals"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert tree["totals"]["tied_groups"] == [["transformer.wte.weight", "lm_head.weight"]]
    trip = client.get("/api/architectures/bert_tiny/round-trip").json()
    assert "bert.embeddings.position_ids" in trip["not_restorable"] and trip["unequal_after_fix"] == []
    page = parse(client.get("/architectures/bert_tiny", params={"device": "cpu"}).text)
    rows = {
        tr.attrs["data-name"]: tr
        for tr in page.find(id="round-trip-rows").find_all("tr")
        if "data-name" in tr.attrs
    }
    bert = direct("bert_tiny", "cpu")
    assert set(rows) == set(dict(bert.named_parameters(remove_duplicate=False)) | dict(bert.named_buffers()))
    for name, tr in rows.items():
        in_state = next(e for e in tr.find_all("td") if "flag" in e.attrs.get("class", "")).text
        assert (in_state == "yes") == (name in bert.state_dict()), name
    # The tiny architectures are lab presets too (registered at start-up); the full sizes are not.
    presets = {p["id"] for p in client.get("/api/presets").json()}
    assert presets & set(ARCHITECTURES) == {a for a, arch in ARCHITECTURES.items() if arch.tiny}


def test_refusals_are_clear_4xx(client: TestClient) -> None:
    cases = [
        ("/api/architectures/nope", 404, "unknown architecture 'nope'"),
        ("/api/architectures/llama_8b?device=cpu", 422, "meta only"),
        ("/api/architectures/llama_tiny?device=tpu", 422, "'tpu' is not a device here"),
        ("/api/architectures/llama_8b/round-trip", 422, "needs it twice in real memory (32.12 GB each"),
        ("/api/architectures/llama_8b?device=cpu", 422, "take 32.12 GB in float32, over the 2.00 GB"),
    ]
    for url, status, says in cases:
        response = client.get(url)
        assert (response.status_code, says in response.json()["detail"]) == (status, True), url
    assert client.get("/api/architectures/llama_tiny", params={"device": "x" * 40}).status_code == 422
    page = client.get("/architectures/llama_8b", params={"device": "cpu"})
    error = parse(page.text).find("section", **{"class": "error"})
    assert page.status_code == 422 and "meta only" in error.text


def test_turned_off() -> None:
    with TestClient(create_app(Settings(architectures=False))) as off:
        for url in ("/api/architectures", "/api/architectures/gpt2", "/architectures", "/architectures/gpt2"):
            response = off.get(url)
            assert response.status_code == 404 and "MRE_ARCHITECTURES=false" in response.text, url


def test_page_shows_torchs_figures_grouped_and_filtered(client: TestClient) -> None:
    model = direct("llama_8b")
    html = client.get("/architectures/llama_8b").text
    page = parse(html)
    assert page.find(id="total-parameters").text == f"{sum(p.numel() for p in model.parameters()):,}"
    paths = [e.attrs["data-path"] for e in page.find_all("details") if "data-path" in e.attrs]
    # 32 identical layers are one row, layers.{0..31}, opened on the first of them.
    later = re.compile(r"model\.layers\.([1-9]|[12][0-9]|3[01])(\.|$)")
    modules = [n for n, _ in model.named_modules() if not later.match(n)]
    at = modules.index("model.layers.0")
    assert paths == [*modules[:at], "model.layers.{0..31}", *modules[at:]]
    layers = next(e for e in page.find_all("details") if e.attrs.get("data-path") == "model.layers.{0..31}")
    said = next(c for c in layers.children if not isinstance(c, str) and c.tag == "summary").text
    assert "32 × LlamaDecoderLayer" in said
    per_layer = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers."))
    assert f"{per_layer:,} trainable" in said
    assert all("style" not in e.attrs for e in page.walk())  # strict CSP: nothing inline
    groups = [e for e in page.find_all("details") if e.attrs.get("class") == "group"]
    state = model.state_dict()
    names = [tr.attrs["data-name"] for g in groups for tr in g.find_all("tr") if "data-name" in tr.attrs]
    # One block's rows stand for the 32: each name once with the span.
    every = [*dict(model.named_parameters()), *dict(model.named_buffers()), *state]
    spelt = {re.sub(r"^model\.layers\.\d+\.", "model.layers.{0..31}.", n) for n in every}
    assert set(names) == spelt
    layers = next(g for g in groups if g.find("summary").find("code").text == "model.layers.{0..31}")
    count = next(e for e in layers.find("summary").walk() if e.attrs.get("class") == "count")
    assert int(count.text) == sum(n.startswith("model.layers.") for n, _ in model.named_parameters())
    # Without JavaScript the filter box is a GET form: the server keeps matching rows only.
    filtered = parse(client.get("/architectures/llama_8b", params={"q": "layers.7.mlp"}).text)
    kept = [tr.attrs["data-name"] for tr in filtered.find_all("tr") if "data-name" in tr.attrs]
    wanted = [n for n in state if "layers.7.mlp" in n]
    assert kept == wanted * 2  # named_parameters() and state_dict()
    zh = client.get("/architectures/llama_tiny", params={"device": "cpu", "lang": "zh-CN"})
    assert zh.status_code == 200 and "模块树" in zh.text
    assert parse(zh.text).find(id="not-restorable").find_all("code")[0].text == "model.rotary_emb.inv_freq"
    # An htmx request gets the report block alone.
    fragment = client.get("/architectures/gpt2_tiny", params={"q": "wte"}, headers={"HX-Request": "true"})
    assert fragment.text.startswith('<div id="results"') and "HX-Request" in fragment.headers["vary"]
    # The page names the torch and transformers it was read from: these.
    full = parse(client.get("/architectures/gpt2_tiny").text)
    assert full.find(id="torch-version").text == f"torch {torch.__version__}"
    assert full.find(id="transformers-version").text == f"transformers {transformers.__version__}"


def test_will_it_fit_speaks_the_pages_language(client: TestClient) -> None:
    asked = {"batch": "2", "tokens": "16", "context": "32"}
    plan = client.get("/api/architectures/gpt2_tiny/plan", params=asked).json()
    for lang, said in (
        ("en", "Input: batch 2, 16 tokens for training, a context of 32 tokens for inference."),
        ("zh-CN", "输入：batch 2，训练 16 个词元，推理上下文 32 个词元。"),
    ):
        page = parse(client.get("/architectures/gpt2_tiny", params={**asked, "lang": lang}).text)
        assert page.find(id="plan-input").text.strip().startswith(said), lang
        words = [r["translations"]["zh-CN"] if lang == "zh-CN" else r for r in plan["recipes"]]
        details = page.find(id="plan-arithmetic")
        assert [h.text for h in details.find_all("h4")] == [w["title"] for w in words]
        lines = [li.text for li in details.find_all("li")]
        expected = []
        for w, r in zip(words, plan["recipes"], strict=True):
            expected += w["arithmetic"]
            expected += [
                f"{c['name']}: {c['translations'][lang] if lang != 'en' else c['arithmetic']}"
                for c in r["cards"]
            ]
        assert lines == expected, lang
        header = [th.text for th in page.find(id="plan-shapes").find_all("th")]
        assert header[:2] == (["Module", "Module class"] if lang == "en" else ["模块", "模块类"]), lang
    # The Chinese page's arithmetic is the Chinese, not the English.
    zh = plan["recipes"][0]["translations"]["zh-CN"]["arithmetic"]
    assert all(a != b for a, b in zip(zh, plan["recipes"][0]["arithmetic"], strict=True))
    vision = parse(client.get("/architectures/vit_tiny", params={"batch": "2", "lang": "zh-CN"}).text)
    assert vision.find(id="plan-input").text.strip().startswith("输入：batch 2，32 x 32 像素。")


def test_transformers_is_imported_at_start_up_and_only_when_on() -> None:
    # Warm: before the app answers, transformers is imported and every catalogue tree built.
    code = (
        "import sys; from fastapi.testclient import TestClient; from app.main import create_app\n"
        "from app.settings import Settings; from app.architectures import memo\n"
        "with TestClient(create_app(Settings(architectures={on}))) as c:\n"
        "    assert c.get('/api/health').status_code == 200\n"
        "    assert ('transformers' in sys.modules) is {on}, sys.modules.get('transformers')\n"
        "    assert len(memo._tree_json) == ({on} and {n})\n"
    )
    for on in (True, False):
        subprocess.run(
            [sys.executable, "-c", code.format(on=on, n=len(ARCHITECTURES))], check=True, timeout=120
        )


def test_a_pasted_config_gets_the_same_pages(client: TestClient) -> None:
    pasted = client.post(
        "/architectures/config", data={"config": json.dumps(LLAMA_CONFIG)}, follow_redirects=False
    )
    assert pasted.status_code == 303
    config = configs.read(json.dumps(LLAMA_CONFIG))
    assert pasted.headers["location"] == "/architectures/config?c=" + configs.encode(config)
    page = client.get(pasted.headers["location"])
    html = parse(page.text)
    assert page.status_code == 200 and html.find(id="plan-table") and html.find(id="round-trip-rows")
    assert (
        html.find(id="total-parameters").text
        == f"{sum(p.numel() for p in configs.build(config, 'meta').parameters()):,}"
    )
    # Uploaded as a file, the same; the API gives the report behind the page.
    upload = client.post(
        "/architectures/config",
        files={"file": ("config.json", json.dumps(LLAMA_CONFIG).encode(), "application/json")},
        follow_redirects=False,
    )
    assert upload.headers["location"] == pasted.headers["location"]
    report = client.post("/api/architectures/config", json=LLAMA_CONFIG).json()
    assert report["c"] == configs.encode(config) and report["tree"]["totals"]["parameters"] > 0
    again = client.get("/api/architectures/config", params={"c": report["c"]}).json()
    assert again == report
    # Refusals name the field: on the page in its language, in the API in English.
    for lang, says in (("en", "model_type: 'nope'"), ("zh-CN", "model_type")):
        refused = client.post(
            "/architectures/config", params={"lang": lang}, data={"config": '{"model_type": "nope"}'}
        )
        error = parse(refused.text).find("section", **{"class": "error"})
        assert refused.status_code == 422 and says in error.text, lang
    bad = client.post("/api/architectures/config", json={"model_type": "llama", "hidden_size": "wide"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("hidden_size: ")
    assert client.get("/api/architectures/config", params={"c": "garbage"}).status_code == 422
