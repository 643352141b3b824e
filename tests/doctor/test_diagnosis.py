"""The doctor, through POST /api/checkpoints and its isolated child, on checkpoints written by the
libraries that write them: each cause found, and each fix line run here, with torch, on the file's
own state, giving exactly the outcome the doctor reported after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file
from torch import nn

from app.doctor.diagnosis import diagnose
from app.doctor.examine import inspect_files
from app.doctor.page import spec_of
from app.lab.query import Bounds
from app.main import create_app
from app.settings import Settings
from tests.support.cases import CAP
from tests.support.checkpoints import LIMITS, Case, said_in_full
from tests.support.html import parse


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    uploads = tmp_path_factory.mktemp("uploads")
    with TestClient(create_app(Settings(checkpoint_tmp_dir=str(uploads)))) as client:
        yield client
    assert list(uploads.iterdir()) == []


def attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def loaded(case: Case, state: dict, strict: bool) -> str:
    return attempt(lambda: case.module().load_state_dict(state, strict=strict))


def state_of(case: Case, at: str) -> dict:
    """The state_dict as torch (or safetensors) itself reads it from the file."""
    if case.file.suffix == ".safetensors":
        return load_file(case.file)
    loaded = torch.load(case.file, weights_only=True)
    return loaded[at] if at else loaded


CAUSES = ["data_parallel", "compiled", "dp_compiled", "lightning", "tied", "no_stats", "persistent_pe"]
CAUSES += ["no_pe", "wider_half"]


@pytest.mark.parametrize("name", CAUSES)
def test_each_cause_and_its_fix_as_torch_sees_them(
    api: TestClient, cases: dict[str, Case], name: str
) -> None:
    case = cases[name]
    answer = api.post(
        f"/api/checkpoints?{case.query}", files={"file": (case.file.name, case.file.read_bytes())}
    )
    assert answer.status_code == 200, answer.text
    load = answer.json()["load"]
    diagnosis = load["diagnosis"]
    assert [c["id"] for c in diagnosis["causes"]] == case.causes
    state = state_of(case, load["state_dict"])
    told = attempt(lambda: case.module().load_state_dict(state))
    assert load["strict"] == told  # torch's message, word for word
    # pytorch#9530: what strict=False really copied, before any fix
    result = case.module().load_state_dict(dict(state), strict=False) if "size" not in told else None
    if result is not None:
        assert diagnosis["loaded_before"] == len(state) - len(result.unexpected_keys)
    for cause in diagnosis["causes"]:
        assert cause["title"]["en"] and cause["title"]["zh-CN"] and cause["explanation"]["zh-CN"]
        for line in cause["torch_says"]:
            assert line in told
        if cause["after_fix"] is None:  # nothing to fix: by design, or torch casts by itself
            assert cause["severity"] != "error" and cause["fix"] == ""
            continue
        assert cause["torch_says"], cause["id"]
        scope = {"torch": torch, "state": state, "model": case.module()}
        exec(cause["fix"], scope)  # the fix as printed, here, on torch's own reading of the file
        state = scope["state"]
        assert loaded(case, state, True) == cause["after_fix"]
    assert diagnosis["strict_after_fixes"] is True
    assert diagnosis["after_fixes"] == loaded(case, state, True) == "ok"
    module = case.module().state_dict()
    assert diagnosis["module_tensors"] == len(module)
    assert diagnosis["loaded_after_fixes"] == len(module) - len(diagnosis["kept_initial"])
    assert set(diagnosis["kept_initial"]) <= set(module)
    assert diagnosis["verdict"] == (
        "loads" if told == "ok" else "partial" if diagnosis["kept_initial"] else "fixed"
    )


def test_a_prefix_is_named_with_its_wrapper_and_silent_non_strict_load(
    api: TestClient, cases: dict[str, Case]
) -> None:
    case = cases["data_parallel"]
    answer = api.post(f"/api/checkpoints?{case.query}", files={"file": ("m.pt", case.file.read_bytes())})
    diagnosis = answer.json()["load"]["diagnosis"]
    (prefix,) = diagnosis["causes"]
    state = torch.load(case.file, weights_only=True)
    assert prefix["keys"] == list(state) and all(k.startswith("module.") for k in state)
    assert "DataParallel" in prefix["explanation"]["en"] and "silently" in prefix["explanation"]["en"]
    assert diagnosis["loaded_before"] == 0
    assert "consume_prefix_in_state_dict_if_present" in prefix["fix"]


def test_tied_alias_and_size_details(api: TestClient, cases: dict[str, Case]) -> None:
    tied = cases["tied"]
    answer = api.post(
        f"/api/checkpoints?{tied.query}", files={"file": ("t.safetensors", tied.file.read_bytes())}
    )
    (cause,) = answer.json()["load"]["diagnosis"]["causes"]
    kept = load_file(tied.file)
    assert "embed.weight" in kept and "head.weight" not in kept and cause["keys"] == ["head.weight"]
    assert cause["fix"] == 'state.update({"head.weight": state["embed.weight"]})'
    wider = cases["wider_half"]
    answer = api.post(f"/api/checkpoints?{wider.query}", files={"file": ("w.pt", wider.file.read_bytes())})
    size, dtype = answer.json()["load"]["diagnosis"]["causes"]
    state, module = torch.load(wider.file, weights_only=True), wider.module().state_dict()
    mismatched = [k for k in module if k in state and state[k].shape != module[k].shape]
    assert size["keys"] == mismatched == ["linear.weight", "linear.bias"]
    for detail in size["details"]:
        key = detail["key"]
        assert detail["checkpoint_shape"] == list(state[key].shape)
        assert detail["module_shape"] == list(module[key].shape)
    assert [(g["pattern"], g["checkpoint_shape"], g["module_shape"]) for g in size["groups"]] == [
        (k, list(state[k].shape), list(module[k].shape)) for k in mismatched
    ]
    assert {d["key"] for d in dtype["details"]} == {
        k
        for k in state
        if k in module and state[k].dtype != module[k].dtype and state[k].shape == module[k].shape
    }
    assert all(
        d["checkpoint_dtype"] == "float16" and d["module_dtype"] == "float32" for d in dtype["details"]
    )


@pytest.mark.parametrize("name", CAUSES)
def test_a_diagnosis_read_in_this_process_is_the_apis(
    api: TestClient, cases: dict[str, Case], name: str
) -> None:
    """The same file read here, not in the inspector's child: where mutation testing sees which test
    runs which line of the doctor, and where every sentence it builds is checked against the catalog
    (by tests/conftest.py)."""
    case = cases[name]
    answer = api.post(
        f"/api/checkpoints?{case.query}", files={"file": (case.file.name, case.file.read_bytes())}
    )
    spec = spec_of(parse_qsl(case.query), Bounds(("cpu", "meta"), CAP))
    here = inspect_files([case.file], [case.file.name], LIMITS, spec).model_dump(mode="json")
    assert here["load"]["diagnosis"] == answer.json()["load"]["diagnosis"]
    assert [c["id"] for c in here["load"]["diagnosis"]["causes"]] == case.causes
    for cause in here["load"]["diagnosis"]["causes"]:
        said_in_full(cause, name)


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_page_shows_each_cause_in_its_language_with_the_apis_fix(
    api: TestClient, cases: dict[str, Case], lang: str
) -> None:
    case = cases["dp_compiled"]
    body = case.file.read_bytes()
    told = api.post(f"/api/checkpoints?{case.query}", files={"file": ("m.pt", body)}).json()["load"]
    page = api.post(f"/checkpoints?lang={lang}", data={"preset": case.preset}, files={"file": ("m.pt", body)})
    assert page.status_code == 200
    items = parse(page.text).find(id="diagnosis").find_all("li", **{"data-cause": "prefix"})
    assert len(items) == 2
    for item, cause in zip(items, told["diagnosis"]["causes"], strict=True):
        assert item.find("h4").text.startswith(cause["title"][lang])
        assert item.find("pre", **{"class": "fix"}).text == cause["fix"]
    script = parse(page.text).find("pre", id="fixes").text
    assert script == told["script"]  # the whole script, as the API gives it
    assert told["diagnosis"]["fixes"][0] in script and script.endswith("strict=True))\n")
    verdict = parse(page.text).find(id="verdict")
    assert verdict.text == told["diagnosis"]["headline"][lang] and verdict.attrs["data-verdict"] == "fixed"
    assert parse(page.text).find(id="download-fixed").attrs["formaction"].startswith("/checkpoints/fix")


class Stack(nn.Module):
    """Ten layers that keep nn.Linear's (out, in) weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(3, 5) for _ in range(10))
        self.scale = nn.Parameter(torch.ones(2, 6))


def told(state: dict, make: Callable[[], nn.Module]) -> str:
    return attempt(lambda: make().load_state_dict(state))


def proven(diagnosis: object, state: dict, make: Callable[[], nn.Module]) -> dict:
    """Each fix as printed, run here on a copy, torch's outcome checked after each."""
    state = dict(state)
    for cause in diagnosis.causes:  # type: ignore[attr-defined]
        if cause.fix:
            scope = {"torch": torch, "state": state, "model": make()}
            exec(cause.fix, scope)
            state = scope["state"]
            assert told(state, make) == cause.after_fix
    return state


def test_transposed_layers_are_one_cause_whose_fix_loops_over_the_pattern() -> None:
    original = Stack().state_dict()
    state = {
        k: v.t().contiguous() if k.endswith("weight") and v.dim() == 2 and k != "scale" else v
        for k, v in original.items()
    }
    state["scale"] = original["scale"].reshape(3, 4)  # the same 12 values, another shape
    diagnosis = diagnose(state, Stack, told(state, Stack))
    transposed, reshaped = diagnosis.causes
    for cause in diagnosis.causes:
        said_in_full(cause.model_dump(mode="json"), "stack")
    assert (transposed.id, reshaped.id) == ("transposed", "reshaped")
    assert [(g.pattern, g.count, g.checkpoint_shape, g.module_shape) for g in transposed.groups] == [
        ("layers.{0..9}.weight", 10, [3, 5], [5, 3])
    ]
    assert transposed.fix == 'for k in [f"layers.{i}.weight" for i in range(10)]: state[k] = state[k].t()'
    assert reshaped.fix == 'for k in ["scale"]: state[k] = state[k].reshape([2, 6])'
    fixed = proven(diagnosis, state, Stack)
    assert diagnosis.after_fixes == "ok" and diagnosis.verdict == "fixed"
    assert all(torch.equal(fixed[k], v) for k, v in original.items())


def test_keys_no_python_literal_can_hold_are_fixed_as_printed() -> None:
    """Quotes, braces and backslashes in keys: the fix is code, and it runs."""
    odd = {f'x"{{y}}\\\\.{i}.w': torch.ones(1) for i in range(12)}
    state = {**Stack().state_dict(), **odd}
    diagnosis = diagnose(state, Stack, told(state, Stack))
    (unexpected,) = diagnosis.causes
    assert unexpected.id == "unexpected" and sorted(unexpected.keys) == sorted(odd)
    assert " for i in range(12)" in unexpected.fix  # one pattern, not twelve keys
    assert proven(diagnosis, state, Stack).keys() == Stack().state_dict().keys()


def test_the_verdict_counts_the_tensors_that_come_from_the_file() -> None:
    full = Stack().state_dict()
    state = {k: v for k, v in full.items() if not k.startswith("layers.9.")}  # a layer short
    diagnosis = diagnose(state, Stack, told(state, Stack))
    (missing,) = diagnosis.causes
    assert missing.id == "missing" and [g.pattern for g in missing.groups] == ["layers.9.{weight,bias}"]
    assert diagnosis.verdict == "partial" and diagnosis.kept_initial == ["layers.9.weight", "layers.9.bias"]
    assert (diagnosis.loaded_after_fixes, diagnosis.module_tensors) == (len(full) - 2, len(full))
    assert diagnosis.headline["en"].startswith(f"loads {len(full) - 2} of {len(full)} tensors")
    proven(diagnosis, state, Stack)


def llama() -> nn.Module:
    import transformers

    from app.architectures.catalogue import ARCHITECTURES

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**ARCHITECTURES["llama_tiny"].config))


def test_nested_non_persistent_buffers_keep_their_module_prefix() -> None:
    """Llama's rotary embedding keeps inv_freq with persistent=False at model.rotary_emb: a file that
    still carries it (saved by an older transformers) is told to drop that key, not that the key is
    unexpected; a file without it is told the buffers are absent by design, by their full names."""
    built = llama()
    state = built.state_dict()
    nested = [n for n, _ in built.named_buffers() if n not in state]  # torch's own answer
    assert "model.rotary_emb.inv_freq" in nested
    carried = {**state, "model.rotary_emb.inv_freq": built.model.rotary_emb.inv_freq}
    diagnosis = diagnose(carried, llama, told(carried, llama))
    by_id = {c.id: c for c in diagnosis.causes}
    assert by_id.keys() == {"non_persistent_saved", "non_persistent_absent"}
    assert by_id["non_persistent_saved"].keys == ["model.rotary_emb.inv_freq"]
    assert by_id["non_persistent_absent"].keys == [n for n in nested if n != "model.rotary_emb.inv_freq"]
    assert proven(diagnosis, carried, llama).keys() == state.keys() and diagnosis.after_fixes == "ok"
    plain = diagnose(dict(state), llama, told(state, llama))
    assert [(c.id, c.keys) for c in plain.causes] == [("non_persistent_absent", nested)]


def _gpt2(**sizes: int) -> nn.Module:
    import transformers

    config = {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256, "n_positions": 128} | sizes
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, bos_token_id=0, eos_token_id=0))


def test_another_width_names_the_config_field_that_holds_the_modules_size(tmp_path) -> None:
    torch.save(_gpt2(n_embd=32).state_dict(), tmp_path / "narrow.pt")
    from app.doctor.examine import inspect_checkpoint

    diagnosis = inspect_checkpoint(tmp_path / "narrow.pt", LIMITS, "gpt2_tiny").load.diagnosis  # type: ignore[union-attr]
    (cause,) = diagnosis.causes
    expected = _gpt2().state_dict()
    assert cause.keys == [k for k, v in _gpt2(n_embd=32).state_dict().items() if v.shape != expected[k].shape]
    assert cause.title["en"] == f"Another width: {len(cause.keys)} tensors of other sizes"
    assert (
        " In the model's config, n_embd = 64; the file was saved with 32. No fix" in cause.explanation["en"]
    )
    assert diagnosis.headline["en"].endswith(
        "the file is a model of another width (32 where the model has 64)"
    )


def test_config_fields_of_positions_and_token_ids_are_not_named_as_a_width() -> None:
    from app.doctor.diagnosis import _config_names

    module = nn.Linear(1, 1)
    module.config = type(  # type: ignore[assignment]
        "Config",
        (),
        {
            "to_dict": lambda self: {
                "width": 64,
                "n_ctx": 64,
                "n_positions": 64,
                "max_position_embeddings": 64,
                "pad_token_id": 64,
                "also": 64,
                "and": 64,
                "more": 64,
                "half": 32,
                "flag": True,
            }
        },
    )()
    assert _config_names(module, 64) == ["also", "and", "more"]  # sorted, at most three
    assert _config_names(module, 1) == []  # True is no size
    assert _config_names(nn.Linear(1, 1), 1) == []  # no config


@pytest.mark.parametrize("prefix", ["base_model.model.", ""])
def test_a_lora_adapter_is_named_with_its_prefix_or_without(tmp_path, prefix: str) -> None:
    from app.doctor.examine import inspect_checkpoint

    lora = {}
    for i in range(2):
        lora[f"{prefix}transformer.h.{i}.attn.c_attn.lora_A.weight"] = torch.zeros(8, 64)
        lora[f"{prefix}transformer.h.{i}.attn.c_attn.lora_B.weight"] = torch.zeros(192, 8)
    lora[f"{prefix}transformer.h.9.attn.c_attn.lora_A.weight"] = torch.zeros(8, 64)  # no layer 9 here
    torch.save(lora, tmp_path / "a.pt")
    diagnosis = inspect_checkpoint(tmp_path / "a.pt", LIMITS, "gpt2_tiny").load.diagnosis  # type: ignore[union-attr]
    assert diagnosis.file_is == "adapter" and [c.id for c in diagnosis.causes] == ["adapter"]
    said = "a PEFT LoRA adapter for base_model.model.* (" if prefix else "a PEFT LoRA adapter ("
    assert f"the file is {said}2 of its 3 target modules are this model's)" in diagnosis.headline["en"]
    assert "modules transformer.h.{0,1,9}.attn.c_attn, saved by PEFT" in diagnosis.causes[0].explanation["en"]


class Tied(nn.Module):
    """Five keys, one of them a tied alias (head.weight is emb.weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.pos, self.norm = nn.Embedding(4, 2), nn.Embedding(3, 2), nn.LayerNorm(2)
        self.head = nn.Linear(2, 4, bias=False)
        self.head.weight = self.emb.weight


def test_a_tied_alias_counts_as_matched_when_telling_another_model_apart() -> None:
    """Two of five keys from the file and the alias they give: three of five, this model with keys
    missing and one extra, not another architecture (which no fix helps)."""
    full = Tied().state_dict()
    state = {"emb.weight": full["emb.weight"], "pos.weight": full["pos.weight"], "junk.weight": torch.ones(1)}
    diagnosis = diagnose(state, Tied, told(state, Tied))
    assert [(c.id, c.keys) for c in diagnosis.causes] == [
        ("tied_weights", ["head.weight"]),
        ("unexpected", ["junk.weight"]),
        ("missing", ["norm.weight", "norm.bias"]),
    ]
    assert diagnosis.verdict == "partial" and diagnosis.headline["en"].startswith("loads 3 of 5 tensors")
    proven(diagnosis, state, Tied)
    alone = {"emb.weight": full["emb.weight"], "junk.weight": torch.ones(1)}  # two of five: another model
    assert [c.id for c in diagnose(alone, Tied, told(alone, Tied)).causes][-1] == "other_architecture"


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential()
        self.body.a, self.body.b, self.body.c = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def test_a_backbone_saved_alone_is_told_when_more_than_half_its_foreign_keys_are_the_submodules() -> None:
    body = Wrapped().body.state_dict()
    junk = {"x1": torch.ones(1), "x2": torch.ones(1)}
    half = {k: body[k] for k in ("a.weight", "a.bias")} | junk  # two of four: not said to be the body
    assert [c.id for c in diagnose(half, Wrapped, told(half, Wrapped)).causes] == ["other_architecture"]
    more = {k: body[k] for k in ("a.weight", "a.bias", "b.weight")} | junk  # three of five
    causes = diagnose(more, Wrapped, told(more, Wrapped)).causes
    assert (causes[0].id, causes[0].keys) == ("backbone", list(more))  # each key is prefixed
    # A later cause names the keys as torch's message did: under the file's own names.
    assert causes[-1].keys == ["body.x1", "body.x2"] and any('"x1"' in line for line in causes[-1].torch_says)
    whole = dict(body)  # the body alone: prefixed, it loads all but the head
    diagnosis = diagnose(whole, Wrapped, told(whole, Wrapped))
    assert [(c.id, c.keys) for c in diagnosis.causes] == [
        ("backbone", list(body)),
        ("missing", ["head.weight", "head.bias"]),
    ]
    fixed = proven(diagnosis, whole, Wrapped)  # the body's values under their prefixed names
    assert sorted(fixed) == sorted([*(f"body.{k}" for k in body), "head.weight", "head.bias"])
    assert all(torch.equal(fixed[f"body.{k}"], v) for k, v in body.items())


def _stored(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == "sparse":
        return t.to_sparse()
    if kind == "sparse_csr":
        return t.to_sparse_csr()
    if kind == "quantized":
        return torch.quantize_per_tensor(t, 0.01, 0, torch.qint8)
    return torch.empty_like(t, device="meta")


@pytest.mark.parametrize(
    ("kind", "cause", "verdict"),
    [
        ("sparse", "sparse", "fixed"),
        ("sparse_csr", "sparse", "fixed"),
        ("quantized", "quantized", "fixed"),
        ("meta", "meta_values", "partial"),
    ],
)
def test_a_tensor_torch_cannot_copy_from_is_a_cause_with_its_fix(
    tmp_path, kind: str, cause: str, verdict: str
) -> None:
    """Sparse, quantized or meta: even strict=False raises (the doctor crashed on it); each is named
    with torch's words, fixed as printed, and the script loads it."""
    from app.doctor.examine import inspect_checkpoint
    from tests.support.checkpoints import ref, spec
    from tests.support.scripts import ran

    state = dict(ref("testmodel").state_dict())
    state["linear.weight"] = _stored(kind, state["linear.weight"])
    torch.save(state, tmp_path / "c.pt")
    model = ref("testmodel")
    with pytest.raises(RuntimeError, match=r'While copying the parameter named "linear\.weight"'):
        model.load_state_dict(state, strict=False)  # what the file really does to torch
    load = inspect_checkpoint(tmp_path / "c.pt", LIMITS, spec("testmodel"), name=str(tmp_path / "c.pt")).load
    assert load is not None and load.diagnosis is not None
    diagnosis = load.diagnosis
    (found,) = diagnosis.causes
    assert (found.id, found.keys, diagnosis.verdict) == (cause, ["linear.weight"], verdict)
    assert found.torch_says and all("linear.weight" in line for line in found.torch_says)
    assert said_in_full(found.model_dump(), kind)  # its count is its keys'
    fixed = proven(diagnosis, torch.load(tmp_path / "c.pt", weights_only=True), lambda: ref("testmodel"))
    assert diagnosis.after_fixes == "ok" and fixed["linear.weight"].layout == torch.strided
    if kind != "meta":
        expected = state["linear.weight"]
        expected = expected.dequantize() if kind == "quantized" else expected.to_dense()
        assert torch.equal(fixed["linear.weight"], expected)
    else:
        assert diagnosis.kept_initial == ["linear.weight"]
    assert ran(load.script) == "<All keys matched successfully>\n"


class Refusing(nn.Linear):
    """A layer whose load raises its own error (not torch's list of mismatches), on two lines."""

    def __init__(self) -> None:
        super().__init__(2, 2)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        raise ValueError("this layer loads from its own format\nsee its documentation")


def test_a_load_that_raises_where_no_cause_helps_is_told_with_torchs_first_line() -> None:
    state = nn.Linear(2, 2).state_dict()
    diagnosis = diagnose(state, Refusing, told(state, Refusing))
    assert diagnosis.causes == [] and diagnosis.verdict == "fails"
    assert diagnosis.headline["en"] == (
        "does not load: loads 0 of 2 tensors, and no fix can help;"
        " torch says ValueError: this layer loads from its own format"
    )


def test_the_api_answers_a_sparse_tensor_with_its_cause_not_a_failed_inspector(
    api: TestClient, tmp_path
) -> None:
    """The inspector's child ended without an answer (a 422 that said nothing of the file)."""
    from tests.support.checkpoints import ref

    state = dict(ref("testmodel").state_dict())
    state["linear.weight"] = state["linear.weight"].to_sparse()
    torch.save(state, tmp_path / "sparse.pt")
    files = {"file": ("sparse.pt", (tmp_path / "sparse.pt").read_bytes())}
    answer = api.post("/api/checkpoints?preset=testmodel", files=files)
    assert answer.status_code == 200, answer.text
    diagnosis = answer.json()["load"]["diagnosis"]
    assert [c["id"] for c in diagnosis["causes"]] == ["sparse"] and diagnosis["verdict"] == "fixed"
