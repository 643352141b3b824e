"""Why a state_dict does not load into a module, cause by cause: each in words (English and
Simplified Chinese), the line of code that fixes it, the lines of torch's own message it explains,
and torch's outcome once that fix (and every fix before it) is applied to the state.

The fixes are applied, in order, to a copy of the state and loaded by torch again: nothing here
predicts what torch will do, it is asked.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from app.lab.report import dtype_name
from app.langs import Text, verbatim

# The wrappers whose names end up in front of every key: DataParallel and DistributedDataParallel,
# torch.compile's OptimizedModule, a LightningModule holding the network as self.model.
PREFIXES = {
    "module.": "DataParallel / DistributedDataParallel",
    "_orig_mod.": "torch.compile",
    "model.": "Lightning",
}
MAX_STRIPS = 3  # module._orig_mod.model. is three wrappers deep
STATS = ("running_mean", "running_var", "num_batches_tracked")
LINE_CHARS = 2000  # a line of torch's message quoted per cause (it lists every key of its kind)
KEYS_IN_FIX = 8  # keys written out in a fix line; more are matched by a comprehension

Severity = Literal["error", "warning", "info"]


class KeyDetail(BaseModel):
    key: str
    checkpoint_shape: list[int]
    checkpoint_dtype: str
    module_shape: list[int]
    module_dtype: str


class Cause(BaseModel):
    id: str = Field(
        description="prefix, tied_weights, batchnorm_stats, non_persistent_saved, non_persistent_absent, "
        "transposed, reshaped, size_mismatch, dtype_change, missing, unexpected"
    )
    severity: Severity = Field(
        description="error: strict load fails; warning: loads, but look; info: by design"
    )
    keys: list[str] = Field(description="The keys this cause explains (after any prefix was removed).")
    title: dict[str, str] = Field(description="The cause in a few words, by language (en, zh-CN).")
    explanation: dict[str, str] = Field(description="What happened and what the fix does, by language.")
    fix: str = Field(description="The line of Python that fixes it ('' when nothing needs fixing).")
    torch_says: list[str] = Field(description="The lines of torch's strict message about these keys.")
    after_fix: str | None = Field(
        None,
        description="torch's outcome once this fix and those before it are applied ('ok' or type: message).",
    )
    details: list[KeyDetail] = Field(default_factory=list, description="Per key: shapes and dtypes.")


class Diagnosis(BaseModel):
    causes: list[Cause]
    fixes: list[str] = Field(
        description="Every fix in order: with them, `model.load_state_dict(state, strict=...)`."
    )
    strict_after_fixes: bool = Field(
        description="Whether the last load is strict (False once keys must stay missing)."
    )
    after_fixes: str = Field(description="torch's outcome of that last load: 'ok', or its refusal.")
    loaded_before: int = Field(
        description="Keys of the file that load_state_dict(strict=False) really copied before any fix "
        "(0 with a wrapper's prefix: it loads nothing, silently, pytorch#9530)."
    )


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except (RecursionError, MemoryError):
        raise
    except Exception as exc:  # torch's refusal is the result
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _copy(state: dict) -> OrderedDict:
    """A state that fixes may change: the same tensors, torch's ``_metadata`` (module versions) kept."""
    copy = OrderedDict(state)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        copy._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    return copy


class _Message:
    """torch's message, its lines indexed once by the keys they name (quoted, or a size mismatch's):
    a file of 100,000 keys makes a message of 100,000 names, asked about by every cause."""

    def __init__(self, message: str) -> None:
        self.lines = [line.strip() for line in message.split("\n")]
        self.naming: dict[str, list[int]] = {}
        for number, line in enumerate(self.lines):
            names = set(line.split('"')[1::2])
            if line.startswith("size mismatch for "):
                names.add(line.removeprefix("size mismatch for ").partition(":")[0])
            for name in names:
                self.naming.setdefault(name, []).append(number)

    def about(self, keys: list[str]) -> list[str]:
        numbers = sorted({n for key in keys for n in self.naming.get(key, ())})
        return [
            self.lines[n] if len(self.lines[n]) <= LINE_CHARS else self.lines[n][: LINE_CHARS - 1] + "…"
            for n in numbers
        ]


def _keys(keys: list[str]) -> str:
    return json.dumps(keys, ensure_ascii=False)


def _shape(t: torch.Tensor) -> list[int]:
    return [len(t.unbind())] if t.is_nested else list(t.shape)


def _non_persistent(module: nn.Module) -> list[str]:
    """The module's buffers that state_dict() leaves out (register_buffer(..., persistent=False))."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules(remove_duplicate=False)
        for name in sub._non_persistent_buffers_set
    ]


def _norm_stat(module: nn.Module, key: str) -> bool:
    owner, _, leaf = key.rpartition(".")
    if leaf not in STATS:
        return False
    try:
        return isinstance(module.get_submodule(owner), _NormBase)
    except AttributeError:
        return False


def _aliases(expected: dict[str, torch.Tensor], missing: list[str], state: dict) -> dict[str, str]:
    """Missing key -> a key the file has that is the same tensor in the module (tied weights)."""
    by_storage: dict[tuple, list[str]] = {}
    for key, t in expected.items():
        if not t.is_meta and t.untyped_storage().nbytes():
            by_storage.setdefault(
                (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []
            ).append(key)
        elif t.is_meta:  # an architecture built on meta: tied tensors are the same object
            by_storage.setdefault((id(t),), []).append(key)
    found = {}
    for key in missing:
        t = expected[key]
        group = by_storage.get(
            (id(t),) if t.is_meta else (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)),
            [],
        )
        alias = next((k for k in group if k != key and k in state), None)
        if alias is not None:
            found[key] = alias
    return found


def _strip(state: dict, expected: dict) -> str | None:
    """The prefix whose removal (and that of the wrappers' prefixes behind it, for a wrapped wrapper:
    module._orig_mod.) makes the most of the file's keys the module's, if any."""
    keys = [k for k in state if k not in expected]
    if not keys:
        return None
    firsts = {k.partition(".")[0] + "." for k in keys if "." in k}
    candidates = [*PREFIXES, *sorted(firsts - set(PREFIXES))] if len(firsts) <= 4 else list(PREFIXES)
    best, gain = None, 0
    for prefix in candidates:
        matched = sum(1 for k in keys if k.startswith(prefix) and _reaches(k[len(prefix) :], expected))
        if matched > gain:
            best, gain = prefix, matched
    return best


def _reaches(key: str, expected: dict, depth: int = MAX_STRIPS) -> bool:
    if key in expected:
        return True
    return depth > 0 and any(
        key.startswith(p) and _reaches(key[len(p) :], expected, depth - 1) for p in PREFIXES
    )


class _Doctor:
    """The state as the fixes leave it, and torch's word on it after each."""

    def __init__(self, state: dict, make: Callable[[], nn.Module], strict_message: str) -> None:
        self.state, self.make, self.told = _copy(state), make, _Message(strict_message)
        self.causes: list[Cause] = []
        self.fixes: list[str] = []
        self.strict = True
        self.names = {k: k for k in state}  # key now -> key in the file (torch's message names those)

    def says(self, keys: list[str]) -> list[str]:
        return self.told.about([self.names.get(k, k) for k in keys])

    def strip(self, prefix: str) -> None:
        consume_prefix_in_state_dict_if_present(self.state, prefix)
        self.names = {k.removeprefix(prefix): v for k, v in self.names.items()}

    def outcome(self) -> str:
        state = self.state
        return _attempt(lambda: self.make().load_state_dict(state, strict=self.strict))

    def add(self, cause: Cause, apply: Callable[[], None] | None) -> None:
        if apply is not None:
            apply()
            self.fixes.append(cause.fix)
            cause.after_fix = self.outcome()
        self.causes.append(cause)


def diagnose(state: dict, make: Callable[[], nn.Module], strict_message: str) -> Diagnosis:
    """Every cause of ``strict_message`` (torch's refusal of ``make().load_state_dict(state)``), and
    what torch says once each cause's fix is applied to a copy of ``state``."""
    doctor = _Doctor(state, make, strict_message)
    module = make()
    expected = module.state_dict(keep_vars=True)
    loaded_before = _loaded(state, module, expected)
    for _ in range(MAX_STRIPS):
        prefix = _strip(doctor.state, expected)
        if prefix is None:
            break
        _prefix_cause(doctor, prefix, loaded_before)
    s = doctor.state
    mismatched = [k for k in expected if k in s and _shape(s[k]) != _shape(expected[k])]
    probe = _copy(s)
    for k in mismatched:
        del probe[k]
    result = make().load_state_dict(probe, strict=False)  # sizes apart, what torch lists
    missing = [k for k in result.missing_keys if k not in mismatched]
    unexpected = list(result.unexpected_keys)

    aliases = _aliases(expected, missing, s)
    if aliases:
        _tied_cause(doctor, aliases)
        missing = [k for k in missing if k not in aliases]
    stats = [k for k in missing if _norm_stat(module, k)]
    if stats:
        _stats_cause(doctor, stats, expected)
        missing = [k for k in missing if k not in stats]
    non_persistent = _non_persistent(module)
    saved = [k for k in unexpected if k in set(non_persistent)]
    if saved:
        _saved_non_persistent_cause(doctor, saved)
        unexpected = [k for k in unexpected if k not in saved]
    absent = [k for k in non_persistent if k not in s and k not in saved]
    if absent:
        _absent_non_persistent_cause(doctor, absent)
    for key in mismatched:
        _size_cause(doctor, key, expected[key])
    changed = [
        k
        for k in expected
        if k in s and k not in mismatched and s[k].dtype != expected[k].dtype and not s[k].is_meta
    ]
    if changed:
        _dtype_cause(doctor, changed, expected)
    if missing:
        _missing_cause(doctor, missing)
    if unexpected:
        _unexpected_cause(doctor, unexpected, len(expected))
    return Diagnosis(
        causes=doctor.causes,
        fixes=doctor.fixes,
        strict_after_fixes=doctor.strict,
        after_fixes=doctor.outcome(),
        loaded_before=loaded_before,
    )


def _loaded(state: dict, module: nn.Module, expected: dict) -> int:
    """Keys a non-strict load copies: those of the module the file has with the module's shape."""
    return sum(1 for k, v in state.items() if k in expected and _shape(v) == _shape(expected[k]))


def _prefix_cause(doctor: _Doctor, prefix: str, loaded_before: int) -> None:
    keys = [k for k in doctor.state if k.startswith(prefix)]
    source = PREFIXES.get(prefix)
    who = (
        Text("saved from a {source} wrapper", source=source)
        if source
        else Text("saved from a module that held this one as an attribute")
    )
    silent = (
        Text(" With strict=False nothing at all is loaded, silently.") if loaded_before == 0 else verbatim("")
    )
    cause = Cause(
        id="prefix",
        severity="error",
        keys=keys,
        title=Text('Every key starts with "{prefix}"', prefix=prefix),
        explanation=Text(
            "The file was {who}: its {count} keys carry the prefix {prefix!r}, which this module's keys "
            "do not.{silent} Removing the prefix (as torch's own consume_prefix_in_state_dict_if_present "
            "does) gives the module's names.",
            who=who,
            count=len(keys),
            prefix=prefix,
            silent=silent,
        ),
        fix=f'torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "{prefix}")',
        torch_says=doctor.says(keys),
    )
    doctor.add(cause, lambda: doctor.strip(prefix))


def _tied_cause(doctor: _Doctor, aliases: dict[str, str]) -> None:
    keys = list(aliases)
    pairs = ", ".join(f'"{k}": state["{a}"]' for k, a in aliases.items())
    words = "; ".join(f"{k} = {a}" for k, a in aliases.items())

    def apply() -> None:
        for key, alias in aliases.items():
            doctor.state[key] = doctor.state[alias]

    cause = Cause(
        id="tied_weights",
        severity="error",
        keys=keys,
        title=Text("A tied weight saved under one name only"),
        explanation=Text(
            "In this module these keys are the same tensor as another ({words}). The saver kept one "
            "name of each shared tensor (safetensors' save_model does; so does transformers' "
            "save_pretrained), so the other is missing; the value is in the file under the name it "
            "kept.",
            words=words,
        ),
        fix=f"state.update({{{pairs}}})",
        torch_says=doctor.says(keys),
    )
    doctor.add(cause, apply)


def _stats_cause(doctor: _Doctor, stats: list[str], expected: dict) -> None:
    defaults = {k: expected[k].detach().clone() for k in stats}
    cause = Cause(
        id="batchnorm_stats",
        severity="error",
        keys=stats,
        title=Text("BatchNorm running statistics missing"),
        explanation=Text(
            "The file has the norm layers' weights but not their running statistics (saved from a "
            "layer built with track_running_stats=False, or filtered out). The fix fills them with "
            "the module's defaults (mean 0, variance 1): in eval mode the layer then normalises with "
            "those, so run some batches in train mode to re-estimate them."
        ),
        fix="state.update({k: v for k, v in model.state_dict().items() if k not in state and k.endswith("
        '("running_mean", "running_var", "num_batches_tracked"))})',
        torch_says=doctor.says(stats),
    )
    doctor.add(cause, lambda: doctor.state.update(defaults))


def _saved_non_persistent_cause(doctor: _Doctor, saved: list[str]) -> None:
    def apply() -> None:
        for key in saved:
            doctor.state.pop(key)

    cause = Cause(
        id="non_persistent_saved",
        severity="error",
        keys=saved,
        title=Text("A non-persistent buffer in the file"),
        explanation=Text(
            "This module registers these buffers with persistent=False: state_dict() leaves them out "
            "and load_state_dict takes no value for them (the module computes its own). The file was "
            "saved from a version where they were persistent. Drop them."
        ),
        fix=f"for k in {_keys(saved)}: state.pop(k)",
        torch_says=doctor.says(saved),
    )
    doctor.add(cause, apply)


def _absent_non_persistent_cause(doctor: _Doctor, absent: list[str]) -> None:
    doctor.add(
        Cause(
            id="non_persistent_absent",
            severity="info",
            keys=absent,
            title=Text("Non-persistent buffers: absent by design"),
            explanation=Text(
                "These buffers are registered with persistent=False: no checkpoint carries them and no "
                "load expects them; the module keeps the values it computed. Not an error."
            ),
            fix="",
            torch_says=[],
        ),
        None,
    )


def _detail(key: str, got: torch.Tensor, want: torch.Tensor) -> KeyDetail:
    return KeyDetail(
        key=key,
        checkpoint_shape=_shape(got),
        checkpoint_dtype=dtype_name(got.dtype),
        module_shape=_shape(want),
        module_dtype=dtype_name(want.dtype),
    )


def _size_cause(doctor: _Doctor, key: str, want: torch.Tensor) -> None:
    got = doctor.state[key]
    have, need = _shape(got), _shape(want)
    detail = [_detail(key, got, want)]
    says = doctor.says([key])
    if len(have) == 2 and have[::-1] == need and not got.is_nested:
        cause = Cause(
            id="transposed",
            severity="error",
            keys=[key],
            title=Text("{key}: stored transposed", key=key),
            explanation=Text(
                "The file has {have}, the module {need}: the same matrix transposed, as a layer that "
                "stores (in, out) saves it (Hugging Face's Conv1D in GPT-2) where nn.Linear keeps (out, "
                "in).",
                have=have,
                need=need,
            ),
            fix=f'state["{key}"] = state["{key}"].t()',
            torch_says=says,
            details=detail,
        )
        doctor.add(cause, lambda: doctor.state.__setitem__(key, doctor.state[key].t()))
        return
    if not got.is_nested and got.numel() == want.numel() and got.layout == torch.strided:
        cause = Cause(
            id="reshaped",
            severity="error",
            keys=[key],
            title=Text("{key}: same elements, another shape", key=key),
            explanation=Text(
                "The file has {have}, the module {need}, with as many elements: a layer saved in "
                "another layout (a 1x1 convolution and a linear layer, a flattened table). Reshape it "
                "only if the element order is the same.",
                have=have,
                need=need,
            ),
            fix=f'state["{key}"] = state["{key}"].reshape({", ".join(map(str, need))})',
            torch_says=says,
            details=detail,
        )
        doctor.add(cause, lambda: doctor.state.__setitem__(key, doctor.state[key].reshape(need)))
        return

    def apply() -> None:
        doctor.state.pop(key)
        doctor.strict = False

    cause = Cause(
        id="size_mismatch",
        severity="error",
        keys=[key],
        title=Text("{key}: another size", key=key),
        explanation=Text(
            "The file has {have}, the module {need}: the layer was built with other sizes (another "
            "vocabulary, number of classes or width). Build the module with the file's sizes, or leave "
            "this tensor at its initial value: drop it and load with strict=False (even strict=False "
            "refuses a size mismatch).",
            have=have,
            need=need,
        ),
        fix=f'state.pop("{key}")  # then model.load_state_dict(state, strict=False)',
        torch_says=says,
        details=detail,
    )
    doctor.add(cause, apply)


def _dtype_cause(doctor: _Doctor, changed: list[str], expected: dict) -> None:
    doctor.add(
        Cause(
            id="dtype_change",
            severity="warning",
            keys=changed,
            title=Text("Another dtype: torch casts on load"),
            explanation=Text(
                "These tensors have another dtype in the file than in the module. load_state_dict copies "
                "into the module's tensors, casting without a word: the module keeps its dtype (a float16 "
                "file loaded into float32 gains nothing; float32 into float16 loses precision). To keep "
                "the file's dtype, cast the module first."
            ),
            fix=f"model.to({_dtype_of(doctor.state, changed)})  # before loading, to keep the file's dtype",
            torch_says=[],
            details=[_detail(k, doctor.state[k], expected[k]) for k in changed],
        ),
        None,
    )


def _dtype_of(state: dict, keys: list[str]) -> str:
    dtypes = {state[k].dtype for k in keys}
    return str(dtypes.pop()) if len(dtypes) == 1 else "dtype"


def _missing_cause(doctor: _Doctor, missing: list[str]) -> None:
    def apply() -> None:
        doctor.strict = False

    doctor.add(
        Cause(
            id="missing",
            severity="error",
            keys=missing,
            title=Text("Keys the file does not have"),
            explanation=Text(
                "The module has these tensors and the file has no value for them under any name. Loaded "
                "with strict=False they keep their initial values: right for a new head on a pretrained "
                "body, wrong if the file is for another model."
            ),
            fix="model.load_state_dict(state, strict=False)",
            torch_says=doctor.says(missing),
        ),
        apply,
    )


def _unexpected_cause(doctor: _Doctor, unexpected: list[str], module_keys: int) -> None:
    matched = sum(1 for k in doctor.state if k not in set(unexpected))
    other = verbatim("")
    if matched == 0:
        other = Text(
            " None of the file's keys is this module's: it is probably a checkpoint of another model."
        )
    fixes = (
        f"for k in {_keys(unexpected)}: state.pop(k)"
        if len(unexpected) <= KEYS_IN_FIX
        else "state = {k: v for k, v in state.items() if k in model.state_dict()}"
    )

    def apply() -> None:
        for key in unexpected:
            doctor.state.pop(key)

    doctor.add(
        Cause(
            id="unexpected",
            severity="error",
            keys=unexpected,
            title=Text("Keys this module does not have"),
            explanation=Text(
                "The file has these tensors; the module (with {module_keys} keys) has nothing of that "
                "name, even with a prefix removed.{other} Drop them if they belong to a part you left "
                "out (an optimizer, an EMA copy, a head you replaced).",
                module_keys=module_keys,
                other=other,
            ),
            fix=fixes,
            torch_says=doctor.says(unexpected),
        ),
        apply,
    )
