"""The tiny architectures in the lab: their own tensors are the members, restyled in place as torch
does it when called directly, every experiment runs on them, and each generated script prints what
the experiment observed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.architectures import config_store, configs, lab
from app.architectures.catalogue import ARCHITECTURES
from app.lab.devices import device_ids
from app.lab.experiments import EXPERIMENTS, run_experiment
from app.lab.presets import PRESETS, register
from app.lab.report import inspect
from app.lab.spec import LabSpec, resolve
from app.main import create_app
from app.settings import Settings
from tests.support.architectures import PASTED_CONFIG, TINY, direct, pasted_direct
from tests.support.html import parse
from tests.support.pictures import well_placed
from tests.support.scripts import run_scripts

RESTYLED = {"model.rotary_emb.inv_freq": "buffer", "model.norm.weight": "frozen_parameter"}


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    for preset in lab.presets():
        register(preset)


def spec(arch_id: str, styles: dict[str, str] | None = None, device: str = "cpu") -> LabSpec:
    return resolve(LabSpec(preset=arch_id, device=device, styles=styles or {}), device_ids(), 4096)


@pytest.mark.parametrize("arch_id", TINY)
def test_the_members_are_the_models_own_tensors_in_their_styles(arch_id: str) -> None:
    model = direct(arch_id)
    state = model.state_dict()
    preset = PRESETS[arch_id]
    expected = {n: "parameter" for n, _ in model.named_parameters()}
    expected |= {n: "buffer" if n in state else "non_persistent_buffer" for n, _ in model.named_buffers()}
    assert {m.name: m.default_style for m in preset.members} == expected
    # As built, the lab's report is torch's own reading of the model.
    report = inspect(spec(arch_id))
    real = direct(arch_id, "cpu")
    assert [r.name for r in report.named_parameters] == list(dict(real.named_parameters()))
    assert [(r.name, r.persistent) for r in report.named_buffers] == [
        (n, n in real.state_dict()) for n, _ in real.named_buffers()
    ]
    assert [r.name for r in report.state_dict] == list(real.state_dict())


@pytest.mark.parametrize("arch_id", TINY)
def test_a_tiny_architectures_preset_builds_what_transformers_builds_and_says_so(arch_id: str) -> None:
    arch = ARCHITECTURES[arch_id]
    preset = lab.preset(arch)
    assert (preset.id, preset.title, preset.description) == (arch_id, arch.title, arch.description)
    assert preset.class_name == "".join(w[:1].upper() + w[1:] for w in arch_id.split("_"))  # LlamaTiny
    assert preset.call == "model(x).logits" and not preset.custom
    assert preset.source == f"transformers {arch.auto_class}.from_config({arch.config_class}(...))"
    # Its script builds it as the catalogue's does on the CPU, seeded, and leaves the device to the lab.
    assert preset.make_code.splitlines()[-1] == f"model = {arch.auto_class}.from_config(config)"
    assert "torch.manual_seed" not in preset.make_code  # the lab's script seeds once, for every preset
    made, real = preset.make().eval(), direct(arch_id, "cpu").eval()  # eval: no dropout
    assert type(made) is type(real) and all(t.device.type == "cpu" for t in made.state_dict().values())
    assert made.state_dict().keys() == real.state_dict().keys()
    assert all(torch.equal(t, real.state_dict()[n]) for n, t in made.state_dict().items())
    x = eval(preset.sample_input, {"torch": torch})  # the batch the lab feeds it
    with torch.no_grad():
        assert torch.equal(eval(preset.call, {"model": made, "x": x}), real(x).logits)


def test_restyled_members_are_what_torch_makes_of_them() -> None:
    report = inspect(spec("llama_tiny", RESTYLED))
    model = direct("llama_tiny", "cpu")
    rotary, norm = model.get_submodule("model.rotary_emb"), model.get_submodule("model.norm")
    inv_freq, weight = rotary.inv_freq, norm.weight.detach()
    del rotary.inv_freq, norm.weight
    rotary.register_buffer("inv_freq", inv_freq)
    norm.weight = nn.Parameter(weight, requires_grad=False)
    assert [(r.name, r.requires_grad) for r in report.named_parameters] == [
        (n, p.requires_grad) for n, p in model.named_parameters()
    ]
    assert [(r.name, r.persistent) for r in report.named_buffers] == [
        (n, n in model.state_dict()) for n, _ in model.named_buffers()
    ]
    assert [r.name for r in report.state_dict] == list(model.state_dict())
    assert "model.rotary_emb.inv_freq" in [r.name for r in report.state_dict]
    members = {m.name: m for m in report.members}
    assert (
        members["model.norm.weight"].in_parameters and not members["model.rotary_emb.inv_freq"].in_parameters
    )


@pytest.mark.parametrize("arch_id", TINY)
def test_every_experiment_runs_and_its_script_prints_what_it_saw(arch_id: str) -> None:
    styles = RESTYLED if arch_id == "llama_tiny" else {}
    results = [run_experiment(e, spec(arch_id, styles), spec(arch_id)) for e in EXPERIMENTS]
    ran = run_scripts([r.code for r in results], preload=("transformers",))
    for result, done in zip(results, ran, strict=True):
        assert done.returncode == 0, (arch_id, result.experiment, done.stderr[-1500:])
        assert result.error is None or result.experiment == "meta_roundtrip", (
            result.experiment,
            result.error,
        )
        lines = done.stdout.splitlines()
        table = lines[next(i for i, line in enumerate(lines) if line.startswith("*" * 20)) + 1 :]
        expected = [
            f"{t.name} {t.kind} {t.device_after} {t.dtype_after} {t.requires_grad_after} {t.has_grad} "
            f"{t.changed} {t.same_object}"
            for t in result.tensors
        ]
        assert table == expected, (arch_id, result.experiment)
    step = results[list(EXPERIMENTS).index("step")]
    if arch_id == "llama_tiny":  # the frozen LayerNorm weight is left alone by the optimizer
        assert "model.norm.weight" not in step.facts["changed_by_optimizer"]
        assert "model.layers.0.input_layernorm.weight" in step.facts["changed_by_optimizer"]


def test_the_lab_page_and_api_open_them(client: TestClient) -> None:
    listed = {p["id"] for p in client.get("/api/presets").json()}
    assert set(TINY) <= listed and "llama_8b" not in listed
    query = {"preset": "llama_tiny", "device": "meta"} | {f"style.{k}": v for k, v in RESTYLED.items()}
    page = client.get("/", params=query)
    assert page.status_code == 200
    permalink = page.headers["HX-Push-Url"]
    assert "style.model.rotary_emb.inv_freq=buffer" in permalink and "preset=llama_tiny" in permalink
    rows = parse(page.text).find_all("tr")
    assert any("model.rotary_emb.inv_freq" in r.text for r in rows)
    moved = client.get("/api/lab", params=query).json()
    assert {r["device"] for r in moved["named_parameters"]} == {"meta"}
    # The page says which torch it was read from: this one.
    assert parse(page.text).find(id="torch-version").text == torch.__version__
    assert ARCHITECTURES["llama_tiny"].tiny


def opened_in_lab(client: TestClient, config: dict, lang: str = "en") -> str:
    """A config pasted, its page's "Open it in the lab" followed: the lab preset id it opens."""
    pasted = client.post(
        "/architectures/config",
        params={"lang": lang},
        data={"config": json.dumps(config)},
        follow_redirects=False,
    )
    page = client.get(pasted.headers["location"])
    link = parse(page.text).find(id="open-in-lab").attrs["href"]
    opened = client.get(link, follow_redirects=False)
    assert opened.status_code == 303, opened.text
    where = urlsplit(opened.headers["location"])
    assert where.path == "/"
    return parse_qs(where.query)["preset"][0]


def test_a_small_pasted_config_opens_in_the_lab_as_transformers_builds_it(client: TestClient) -> None:
    preset_id = opened_in_lab(client, PASTED_CONFIG)
    assert preset_id == "config:" + config_store.digest(configs.read(json.dumps(PASTED_CONFIG)))
    restyled = {"model.rotary_emb.inv_freq": "buffer", "model.norm.weight": "frozen_parameter"}
    for device in ("cpu", "meta"):
        query = {"preset": preset_id, "device": device} | {f"style.{k}": v for k, v in restyled.items()}
        report = client.get("/api/lab", params=query).json()
        # The reference: transformers called here, restyled as torch does it directly, then moved.
        model = pasted_direct()
        rotary, norm = model.get_submodule("model.rotary_emb"), model.get_submodule("model.norm")
        inv_freq, weight = rotary.inv_freq, norm.weight.detach()
        del rotary.inv_freq, norm.weight
        rotary.register_buffer("inv_freq", inv_freq)
        norm.weight = nn.Parameter(weight, requires_grad=False)
        assert model.lm_head.weight is model.model.embed_tokens.weight  # tied as built
        model.to(device)
        state = model.state_dict()

        def row(name: str, t: torch.Tensor) -> tuple:
            return name, list(t.shape), str(t.dtype).removeprefix("torch."), str(t.device)

        got = [
            (r["name"], r["shape"], r["dtype"], r["device"], r["requires_grad"])
            for r in report["named_parameters"]
        ]
        assert got == [(*row(n, p), p.requires_grad) for n, p in model.named_parameters()], device
        got = [
            (r["name"], r["shape"], r["dtype"], r["device"], r["persistent"]) for r in report["named_buffers"]
        ]
        assert got == [(*row(n, b), n in state) for n, b in model.named_buffers()], device
        assert [(r["name"], r["shape"], r["dtype"], r["device"]) for r in report["state_dict"]] == [
            row(n, t) for n, t in state.items()
        ], device
        assert {m["device_before"] for m in report["members"]} == {"cpu"}
        assert {m["device_after"] for m in report["members"]} == {device}
        # The head is tied on the CPU (one parameter, two state_dict names); .to("meta") gives each
        # name a tensor of its own, and the report says so as torch does.
        tied = "lm_head.weight" not in [r["name"] for r in report["named_parameters"]]
        assert tied == (model.lm_head.weight is model.model.embed_tokens.weight) == (device == "cpu")
    # Its title and description on the lab's page: transformers' class, the digest's first 8
    # characters, the elements of its parameters (the tied one once) and of its buffers.
    page = parse(client.get("/", params={"preset": preset_id}).text)
    model = pasted_direct()
    counted = sum(t.numel() for t in [*model.parameters(), *model.buffers()])
    said = " ".join(page.text.split())
    assert f"LlamaForCausalLM · config.json {preset_id.removeprefix('config:')[:8]} " in said
    assert (
        f"A config.json pasted on the architectures page (llama): {counted:,} parameter and buffer "
        "elements, built by transformers in this server with seeded values. Its own tensors are the "
        "members: restyle them, move it, run the experiments."
    ) in said
    # Listed nowhere: only its URL opens it. The checkpoint doctor (whose inspections run in a child
    # that knows the listed presets only) refuses it by name rather than failing in that child.
    assert preset_id not in {p["id"] for p in client.get("/api/presets").json()}
    buffer = io.BytesIO()
    torch.save(pasted_direct().state_dict(), buffer)
    doctor = client.post(
        "/api/checkpoints", params={"preset": preset_id}, files={"file": ("m.pt", buffer.getvalue())}
    )
    assert (
        doctor.status_code == 422
        and "not a pasted config kept for the lab" in doctor.json()["detail"][0]["msg"]
    )


def test_every_experiment_runs_on_a_pasted_config_and_its_script_prints_what_it_saw(
    client: TestClient,
) -> None:
    preset_id = opened_in_lab(client, PASTED_CONFIG)
    styles = {"model.rotary_emb.inv_freq": "buffer"}
    results = [run_experiment(e, spec(preset_id, styles), spec(preset_id)) for e in EXPERIMENTS]
    ran = run_scripts([r.code for r in results], preload=("transformers",))
    for result, done in zip(results, ran, strict=True):
        assert done.returncode == 0, (result.experiment, done.stderr[-1500:])
        assert result.error is None or result.experiment == "meta_roundtrip", (
            result.experiment,
            result.error,
        )
        lines = done.stdout.splitlines()
        table = lines[next(i for i, line in enumerate(lines) if line.startswith("*" * 20)) + 1 :]
        expected = [
            f"{t.name} {t.kind} {t.device_after} {t.dtype_after} {t.requires_grad_after} {t.has_grad} "
            f"{t.changed} {t.same_object}"
            for t in result.tensors
        ]
        assert table == expected, result.experiment
    step = results[list(EXPERIMENTS).index("step")]
    assert "model.layers.0.mlp.up_proj.weight" in step.facts["changed_by_optimizer"]


def test_the_pasted_configs_lab_page_in_chinese(client: TestClient) -> None:
    preset_id = opened_in_lab(client, PASTED_CONFIG, "zh-CN")
    page = client.get("/", params={"preset": preset_id, "lang": "zh-CN"})
    html = parse(page.text)
    assert page.status_code == 200 and "在架构页面粘贴的 config.json（llama）" in page.text
    chosen = [o for o in html.find(id="preset").find_all("option") if "selected" in o.attrs]
    assert [o.attrs["value"] for o in chosen] == [preset_id]  # the form sends it back
    assert any("model.rotary_emb.inv_freq" in r.text for r in html.find_all("tr"))


def test_a_config_too_large_for_the_lab_says_why_and_is_refused_naming_the_cap(client: TestClient) -> None:
    large = {**PASTED_CONFIG, "vocab_size": 40_000}  # 1.3 million embedding elements
    for lang, says in (
        ("en", "over the lab's cap of 1,000,000 (MRE_LAB_CONFIG_MAX_ELEMENTS)"),
        ("zh-CN", "超过了实验室的上限 1,000,000"),
    ):
        pasted = client.post(
            "/architectures/config",
            params={"lang": lang},
            data={"config": json.dumps(large)},
            follow_redirects=False,
        )
        page = parse(client.get(pasted.headers["location"]).text)
        assert not page.find_all(id="open-in-lab")
        assert says in page.find(id="not-in-lab").text, lang
        # Asked for anyway: a 413 in the page's language, naming the cap; nothing kept.
        c = parse_qs(urlsplit(pasted.headers["location"]).query)["c"][0]
        refused = client.get("/architectures/config/lab", params={"c": c, "lang": lang})
        error = parse(refused.text).find(id="results").find("code").text
        assert refused.status_code == 413 and says in error and "config.json" in error, lang
    key = config_store.digest(configs.read(json.dumps(large)))
    assert client.get("/api/lab", params={"preset": f"config:{key}"}).status_code == 404


def test_an_unknown_digest_is_a_404_in_the_pages_language(client: TestClient) -> None:
    unknown = "config:" + "a" * 52
    api = client.get("/api/lab", params={"preset": unknown})
    assert api.status_code == 404 and "no such config is kept here" in api.json()["detail"]
    for lang, says in (("en", "no such config is kept here"), ("zh-CN", "这里没有保存这个配置")):
        page = client.get("/", params={"preset": unknown, "lang": lang})
        error = parse(page.text).find("section", class_="error").text
        assert page.status_code == 404 and says in error and "MRE_LAB_CONFIG_DIR" in error, lang


def test_the_cap_at_its_boundary(tmp_path: Path) -> None:
    count = sum(p.numel() for p in pasted_direct().parameters()) + sum(
        b.numel() for b in pasted_direct().buffers()
    )
    for cap, status in ((count, 303), (count - 1, 413)):
        settings = Settings(lab_config_max_elements=cap, lab_config_dir=str(tmp_path / str(cap)))
        app = TestClient(create_app(settings))
        c = configs.encode(configs.read(json.dumps(PASTED_CONFIG)))
        page = parse(app.get("/architectures/config", params={"c": c}).text)
        assert bool(page.find_all(id="open-in-lab")) == (status == 303), cap
        opened = app.get("/architectures/config/lab", params={"c": c}, follow_redirects=False)
        assert opened.status_code == status, cap
        assert len(list((tmp_path / str(cap)).glob("*.json"))) == (status == 303)


@pytest.mark.parametrize(
    ("config", "main_input", "batch"),
    [
        ({"vocab_size": 100, "max_position_embeddings": 4}, "input_ids", "torch.randint(0, 100, (2, 4))"),
        ({"vocab_size": 50000, "n_positions": 1024}, "input_ids", "torch.randint(0, 256, (2, 8))"),
        (
            {"vocab_size": 0, "max_position_embeddings": 0, "n_positions": 6},
            "input_ids",
            "torch.randint(0, 256, (2, 6))",
        ),
        ({"vocab_size": None}, "input_ids", "torch.randint(0, 256, (2, 8))"),  # no positions: 8 tokens
        ({"image_size": 64, "num_channels": 1}, "pixel_values", "torch.randn(2, 1, 64, 64)"),
        ({"image_size": [64, 64]}, "pixel_values", "torch.randn(2, 3, 32, 32)"),
    ],
)
def test_the_sample_batch_fits_the_vocabulary_positions_and_images_of_the_config(
    config: dict, main_input: str, batch: str
) -> None:
    from types import SimpleNamespace

    from app.architectures.lab import sample_input

    model = SimpleNamespace(config=SimpleNamespace(**config), main_input_name=main_input)
    assert sample_input(model) == batch  # type: ignore[arg-type]


def test_a_plain_tensor_in_a_real_model_is_drawn_in_its_modules_box_under_its_own_name() -> None:
    """model.rotary_emb.inv_freq made a plain attribute: torch lists it nowhere; the picture puts it
    in the box of model.rotary_emb, where it lives, as "inv_freq"."""
    from app.lab import diagram, memo
    from app.langs import EN

    s = spec("llama_tiny", {"model.rotary_emb.inv_freq": "plain_tensor"}, "meta")
    d = diagram.draw(memo.report(s), EN)
    (chip,) = [c for c in d.chips if c.item.tensors == ("model.rotary_emb.inv_freq",)]
    assert (chip.kind, chip.item.path, chip.item.label) == ("plain", "model.rotary_emb", "inv_freq")
    box = next(b for b in d.boxes if b.title == "rotary_emb")
    assert chip.rect in box.rect


@pytest.mark.parametrize("arch_id", TINY)
def test_every_real_models_picture_is_legible_fresh_and_moved(arch_id: str) -> None:
    """Each tiny architecture drawn on cpu, then after model.to("meta") with the marks of the move, in
    each language and variant: lanes in order, no text on another or cut by a chip."""
    from app.lab import diagram, memo
    from app.lab.diff import compare
    from app.langs import EN, ZH

    cpu, meta = memo.report(spec(arch_id)), memo.report(spec(arch_id, device="meta"))
    for lang in (EN, ZH):
        for variant in (diagram.WIDE, diagram.NARROW):
            well_placed(diagram.draw(cpu, lang, variant))
            well_placed(diagram.draw(meta, lang, variant, before=cpu, diff=compare(cpu, meta)))
