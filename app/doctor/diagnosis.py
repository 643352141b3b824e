"""Why a state_dict does not load into a module, cause by cause: each in words (English and
Simplified Chinese), the Python that fixes it, the lines of torch's own message it explains, the keys
it concerns grouped by pattern over layer indices, and torch's outcome once that fix (and every fix
before it) is applied to the state; then one verdict: how many of the module's tensors the fixed state
really gives, and what the file is when it is not this module's.

Each fix is Python code, and that very code is run on a copy of the state (exec, with ``torch``,
``state`` and a fresh ``model``) before torch loads it again: what is printed is what was proven.
Nothing here predicts what torch will do, it is asked. A fix is offered only where it helps the
module load: dropping every key of another model "works" with strict=False and loads nothing, so it
is never offered; the verdict says what the file is instead.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from app.doctor.patterns import group, keys_code
from app.lab.report import dtype_name
from app.langs import Text, verbatim

# The wrappers whose names end up in front of every key: DataParallel and DistributedDataParallel,
# torch.compile's OptimizedModule, a LightningModule holding the network as self.model.
PREFIXES = {
    "module.": "DataParallel / DistributedDataParallel",
    "_orig_mod.": "torch.compile",
    "model.": "Lightning",
}
SWA = "torch.optim.swa_utils.AveragedModel (SWA / EMA)"  # module. and an n_averaged counter
COMPILED = "._orig_mod."  # a submodule compiled on its own: linear._orig_mod.weight
MAX_STRIPS = 3  # module._orig_mod.model. is three wrappers deep
STATS = ("running_mean", "running_var", "num_batches_tracked")
LINE_CHARS = 2000  # a line of torch's message quoted per cause (it lists every key of its kind)
FEW = 4  # size mismatches in at most this many keys, outside repeated layers: a head, not the width
LORA = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
GROUPS_IN_WORDS = 3  # patterns named in a headline

Severity = Literal["error", "warning", "info"]
Verdict = Literal["loads", "fixed", "partial", "fails"]


class KeyDetail(BaseModel):
    key: str
    checkpoint_shape: list[int]
    checkpoint_dtype: str
    module_shape: list[int]
    module_dtype: str


class KeyGroup(BaseModel):
    pattern: str = Field(
        description="Its keys as one pattern over layer indices: h.{0..11}.attn.c_attn.weight"
    )
    count: int = Field(description="How many keys the pattern stands for (exactly those).")
    checkpoint_shape: list[int] | None = Field(None, description="Shape in the file, when it is one.")
    module_shape: list[int] | None = Field(None, description="Shape in the module, when it is one.")
    checkpoint_dtype: str | None = None
    module_dtype: str | None = None


class Cause(BaseModel):
    id: str = Field(
        description="prefix, compiled_submodule, backbone, tied_weights, batchnorm_stats, "
        "non_persistent_saved, non_persistent_absent, transposed, reshaped, size_mismatch, other_width, "
        "dtype_change, missing_shard, missing, unexpected, optimizer_state, adapter, other_architecture, "
        "sparse, quantized, meta_values"
    )
    severity: Severity = Field(
        description="error: strict load fails; warning: loads, but look; info: by design"
    )
    keys: list[str] = Field(description="The keys this cause explains (after any prefix was removed).")
    title: dict[str, str] = Field(description="The cause in a few words, by language (en, zh-CN).")
    explanation: dict[str, str] = Field(description="What happened and what the fix does, by language.")
    fix: str = Field(description="The Python that fixes it ('' when no fix can help, or none is needed).")
    torch_says: list[str] = Field(description="The lines of torch's strict message about these keys.")
    after_fix: str | None = Field(
        None,
        description="torch's outcome once this fix and those before it are applied ('ok' or type: message).",
    )
    details: list[KeyDetail] = Field(default_factory=list, description="Per key: shapes and dtypes.")
    groups: list[KeyGroup] = Field(
        default_factory=list, description="The keys by pattern over layer indices (with shapes, for sizes)."
    )


class Diagnosis(BaseModel):
    causes: list[Cause]
    fixes: list[str] = Field(description="Every fix in order: with them, `model.load_state_dict(state)`.")
    strict_after_fixes: bool = Field(
        description="Whether the last load is strict (always, now: keys the file lacks are filled by a fix)."
    )
    after_fixes: str = Field(description="torch's outcome of that last load: 'ok', or its refusal.")
    loaded_before: int = Field(
        description="Keys of the file that load_state_dict(strict=False) really copied before any fix "
        "(0 with a wrapper's prefix: it loads nothing, silently, pytorch#9530)."
    )
    module_tensors: int = Field(0, description="The module's persistent tensors: its state_dict()'s keys.")
    loaded_after_fixes: int = Field(
        0, description="Of those, how many get their value from the file once the fixes are applied."
    )
    kept_initial: list[str] = Field(
        default_factory=list, description="The module's keys a fix fills with the module's own initial value."
    )
    verdict: Verdict = Field(
        "loads",
        description="loads (strictly, as saved), fixed (all tensors load with the fixes), partial (some "
        "keep their initial values), fails (no fix makes it load)",
    )
    file_is: str | None = Field(
        None,
        description="What the file is when not this module's state: optimizer_state, adapter, backbone, "
        "other_architecture, other_width, missing_shard",
    )
    headline: dict[str, str] = Field(
        default_factory=dict, description="The verdict in one line, by language."
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
            for name in sorted(names):
                self.naming.setdefault(name, []).append(number)

    def about(self, keys: list[str]) -> list[str]:
        numbers = sorted({n for key in keys for n in self.naming.get(key, ())})
        return [
            self.lines[n] if len(self.lines[n]) <= LINE_CHARS else self.lines[n][: LINE_CHARS - 1] + "…"
            for n in numbers
        ]


def _shape(t: torch.Tensor) -> list[int]:
    return [len(t.unbind())] if t.is_nested else list(t.shape)


def _non_persistent(module: nn.Module) -> list[str]:
    """The module's buffers that state_dict() leaves out (register_buffer(..., persistent=False)), in
    the module's own order (the set torch keeps them in has none: its order follows the hash seed)."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules(remove_duplicate=False)
        for name in sub._buffers
        if name in sub._non_persistent_buffers_set
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
        group_ = by_storage.get(
            (id(t),) if t.is_meta else (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)),
            [],
        )
        alias = next((k for k in group_ if k != key and k in state), None)
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
    if key in expected or key.replace(COMPILED, ".") in expected:
        return True
    return depth > 0 and any(
        key.startswith(p) and _reaches(key[len(p) :], expected, depth - 1) for p in PREFIXES
    )


def _submodule_prefix(module: nn.Module, state: dict, expected: dict) -> str | None:
    """The path of a submodule (``transformer.``) in front of which most of the file's foreign keys
    are the module's: the file is that submodule's state (a backbone saved alone)."""
    foreign = [k for k in state if k not in expected]
    if not foreign:
        return None
    candidates = [
        f"{name}."
        for name, _ in module.named_modules()
        if name and name.count(".") < 2 and not any(part.isdecimal() for part in name.split("."))
    ]
    best, gain = None, 0
    for prefix in candidates:
        matched = sum(1 for k in foreign if prefix + k in expected)
        if matched > gain:
            best, gain = prefix, matched
    return best if gain * 2 > len(foreign) else None


def _lora(keys: list[str]) -> bool:
    marked = sum(1 for k in keys if any(f".{m}." in f".{k}." for m in LORA))
    return bool(keys) and marked * 2 >= len(keys)


def _dims(details: list[KeyDetail]) -> list[tuple[int, int, int]]:
    """(size in the file, size in the module, tensors) for each pair of sizes that differ, most
    common first: 768 where the model has 384, in 98 tensors."""
    pairs: Counter[tuple[int, int]] = Counter()
    for d in details:
        if len(d.checkpoint_shape) == len(d.module_shape):
            for have, need in set(zip(d.checkpoint_shape, d.module_shape, strict=True)):
                if have != need:
                    pairs[(have, need)] += 1
    return [(have, need, n) for (have, need), n in pairs.most_common()]


def _config_names(module: nn.Module, value: int) -> list[str]:
    """The transformers config fields of the module that hold ``value`` (n_embd, hidden_size)."""
    config = getattr(module, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return []
    skip = ("token_id", "max_position", "n_positions", "n_ctx")
    return [
        k
        for k, v in sorted(to_dict().items())
        if type(v) is int and v == value and not any(s in k for s in skip)
    ][:3]


def _groups(keys: list[str], state: dict | None = None, expected: dict | None = None) -> list[KeyGroup]:
    """``keys`` by pattern; with ``state`` and ``expected``, one pattern per pair of shapes and dtypes."""

    def label(key: str) -> tuple:
        if state is None or expected is None or key not in state or key not in expected:
            return ()
        have, need = state[key], expected[key]
        return (tuple(_shape(have)), tuple(_shape(need)), dtype_name(have.dtype), dtype_name(need.dtype))

    out = []
    for tag, pattern in group(keys, label):
        g = KeyGroup(pattern=str(pattern), count=pattern.count)
        if tag:
            have, need, have_dtype, need_dtype = tag  # type: ignore[misc]
            g.checkpoint_shape, g.module_shape = list(have), list(need)
            g.checkpoint_dtype, g.module_dtype = have_dtype, need_dtype
        out.append(g)
    return out


def _patterns(keys: list[str], most: int = GROUPS_IN_WORDS) -> str:
    """A few keys as patterns, for a sentence: h.{0..1}.attn.bias, lm_head.weight (and 3 more)."""
    found = [str(p) for _, p in group(keys)]
    more = f" (+{len(found) - most})" if len(found) > most else ""
    return ", ".join(found[:most]) + more


class _Doctor:
    """The state as the fixes leave it, and torch's word on it after each."""

    def __init__(self, state: dict, make: Callable[[], nn.Module], strict_message: str) -> None:
        self.state, self.make, self.told = _copy(state), make, _Message(strict_message)
        self.model = make()  # what a fix reads (model.state_dict()); never loaded into
        self.causes: list[Cause] = []
        self.fixes: list[str] = []
        self.kept_initial: list[str] = []
        self.file_is: tuple[str, Text] | None = None
        self.names = {k: k for k in state}  # key now -> key in the file (torch's message names those)

    def says(self, keys: list[str]) -> list[str]:
        return self.told.about([self.names.get(k, k) for k in keys])

    def rename(self, renamed: Callable[[str], str]) -> None:
        self.names = {renamed(k): v for k, v in self.names.items()}

    def outcome(self) -> str:
        state = self.state
        return _attempt(lambda: self.make().load_state_dict(state))

    def add(self, cause: Cause) -> None:
        """The cause, its fix (if any) run on the state as printed, and torch's outcome after it."""
        if cause.fix:
            scope = {"torch": torch, "state": self.state, "model": self.model}
            exec(compile(cause.fix, "<fix>", "exec"), scope)  # the printed code, nothing else
            self.state = scope["state"]
            self.fixes.append(cause.fix)
            cause.after_fix = self.outcome()
        self.causes.append(cause)


def diagnose(
    state: dict,
    make: Callable[[], nn.Module],
    strict_message: str,
    *,
    file_is: tuple[str, Text] | None = None,
    absent: dict[str, str] | None = None,
    fixed: dict | None = None,
) -> Diagnosis:
    """Every cause of ``strict_message`` (torch's refusal of ``make().load_state_dict(state)``), and
    what torch says once each cause's fix is applied to a copy of ``state``. ``file_is`` names what
    the file was found to be from its structure (an optimizer's state); ``absent`` maps the keys an
    index puts in shards that are not here to those shards' names; ``fixed`` receives the state as
    the fixes leave it."""
    doctor = _Doctor(state, make, strict_message)
    module = doctor.model
    expected = module.state_dict(keep_vars=True)
    loaded_before = _loaded(state, expected)
    if file_is is not None:
        _foreign_cause(doctor, *file_is)
    elif _lora(list(state)) and not any(k in expected for k in state):
        _adapter_cause(doctor, module)
    else:
        _find_causes(doctor, module, expected, absent or {})
    if fixed is not None:
        fixed.update(doctor.state)
    return _verdict(doctor, module, expected, strict_message, loaded_before)


def _find_causes(doctor: _Doctor, module: nn.Module, expected: dict, absent: dict[str, str]) -> None:
    absent_now = dict(absent)  # the absent keys, renamed as the fixes rename the file's
    for _ in range(MAX_STRIPS):
        prefix = _strip(doctor.state, expected)
        if prefix is None:
            break
        _prefix_cause(doctor, prefix)
        absent_now = {k.removeprefix(prefix): v for k, v in absent_now.items()}
    if any(
        COMPILED in k and k not in expected and k.replace(COMPILED, ".") in expected for k in doctor.state
    ):
        _compiled_cause(doctor)
        absent_now = {k.replace(COMPILED, "."): v for k, v in absent_now.items()}
    prefix = _submodule_prefix(module, doctor.state, expected)
    if prefix is not None:
        _backbone_cause(doctor, prefix, len(expected))
        absent_now = {prefix + k: v for k, v in absent_now.items()}
    s = doctor.state
    mismatched = [k for k in expected if k in s and _shape(s[k]) != _shape(expected[k])]
    uncopyable = [k for k in expected if k in s and k not in mismatched and not _copies(s[k], expected[k])]
    if uncopyable:
        _storage_causes(doctor, uncopyable, expected)
        s = doctor.state
    probe = _copy(s)
    for k in mismatched:
        del probe[k]
    try:
        result = doctor.make().load_state_dict(probe, strict=False)  # sizes apart, what torch lists
    except Exception:  # torch refuses a value no cause names: its own words are the verdict
        return
    missing = [k for k in result.missing_keys if k not in mismatched]
    unexpected = list(result.unexpected_keys)
    matched = sum(1 for k in expected if k in s and k not in mismatched)

    in_absent = [k for k in missing if k in absent_now]
    if in_absent:
        _missing_shard_cause(doctor, in_absent, absent_now)
        missing = [k for k in missing if k not in absent_now]
    aliases = _aliases(expected, missing, s)
    if aliases:
        _tied_cause(doctor, aliases)
        missing = [k for k in missing if k not in aliases]
        matched += len(aliases)
    foreign = bool(unexpected) and matched * 2 < len(expected) and not mismatched
    if foreign:  # another model's keys: no fix helps, and dropping them all would load nothing
        _other_architecture_cause(doctor, module, unexpected, missing)
        return
    stats = [k for k in missing if _norm_stat(module, k)]
    if stats:
        _stats_cause(doctor, stats)
        missing = [k for k in missing if k not in stats]
    non_persistent = _non_persistent(module)
    saved = [k for k in unexpected if k in set(non_persistent)]
    if saved:
        _saved_non_persistent_cause(doctor, saved)
        unexpected = [k for k in unexpected if k not in saved]
    absent_buffers = [k for k in non_persistent if k not in s and k not in saved]
    if absent_buffers:
        _absent_non_persistent_cause(doctor, absent_buffers)
    if mismatched:
        _size_causes(doctor, module, mismatched, expected)
    changed = [
        k
        for k in expected
        if k in doctor.state
        and k not in mismatched
        and doctor.state[k].dtype != expected[k].dtype
        and not doctor.state[k].is_meta
    ]
    if changed:
        _dtype_cause(doctor, changed, expected)
    if unexpected:
        _unexpected_cause(doctor, unexpected, len(expected))
    if missing:
        _missing_cause(doctor, missing)


def _loaded(state: dict, expected: dict) -> int:
    """Keys a non-strict load copies: those of the module the file has with the module's shape."""
    return sum(1 for k, v in state.items() if k in expected and _shape(v) == _shape(expected[k]))


def _verdict(
    doctor: _Doctor, module: nn.Module, expected: dict, strict_message: str, loaded_before: int
) -> Diagnosis:
    n = len(expected)
    after = doctor.outcome()
    kept = [k for k in expected if k in set(doctor.kept_initial)]
    if strict_message == "ok":
        verdict: Verdict = "loads"
        loaded = n
        headline = Text(
            "loads: all {n} tensors of {name} match the file (strict=True)", n=n, name=_name(module)
        )
    elif after == "ok" and not kept:
        verdict, loaded = "fixed", n
        headline = Text(
            "does not load as saved; with the fixes below ({fixes}) all {n} tensors load (strict=True)",
            fixes=len(doctor.fixes),
            n=n,
        )
    elif after == "ok":
        verdict, loaded = "partial", n - len(kept)
        headline = Text(
            "loads {loaded} of {n} tensors with the fixes below; {kept} keep the module's initial values "
            "({keys})",
            loaded=loaded,
            n=n,
            kept=len(kept),
            keys=verbatim(_patterns(kept)),
        )
    else:
        verdict, loaded = "fails", 0
        headline = Text(
            "does not load: loads 0 of {n} tensors, and no fix can help; torch says {error}",
            n=n,
            error=verbatim(after.split("\n")[0].strip()),
        )
    file_is = None
    if doctor.file_is is not None:
        file_is, what = doctor.file_is
        if verdict == "fails":
            headline = Text("does not load: loads 0 of {n} tensors; {what}", n=n, what=what)
        else:
            headline = Text("{what}; {headline}", what=what, headline=headline)
    return Diagnosis(
        causes=doctor.causes,
        fixes=doctor.fixes,
        strict_after_fixes=True,
        after_fixes=after,
        loaded_before=loaded_before,
        module_tensors=n,
        loaded_after_fixes=loaded,
        kept_initial=kept,
        verdict=verdict,
        file_is=file_is,
        headline=dict(headline),
    )


def _name(module: nn.Module) -> str:
    return type(module).__name__


def _prefix_cause(doctor: _Doctor, prefix: str) -> None:
    keys = [k for k in doctor.state if k.startswith(prefix)]
    averaged = prefix == "module." and "n_averaged" in doctor.state
    source = SWA if averaged else PREFIXES.get(prefix)
    who = (
        Text("saved from a {source} wrapper", source=source)
        if source
        else Text("saved from a module that held this one as an attribute")
    )
    silent = (
        Text(" With strict=False nothing at all is loaded, silently.")
        if not any(k in doctor.model.state_dict() for k in doctor.state)
        else verbatim("")
    )
    fix = f"torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, {json.dumps(prefix)})"
    if averaged:
        fix = 'state.pop("n_averaged")\n' + fix
        keys.append("n_averaged")
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
        fix=fix,
        torch_says=doctor.says(keys),
        groups=_groups(keys),
    )
    if averaged:
        cause.explanation = dict(
            Text(
                "The file was saved from {source}: its keys carry the prefix 'module.' and it counts the "
                "models it averaged in n_averaged, which no model has. Drop the counter and remove the "
                "prefix.",
                source=SWA,
            )
        )
    doctor.add(cause)
    doctor.rename(lambda k: k.removeprefix(prefix))


def _compiled_cause(doctor: _Doctor) -> None:
    keys = [k for k in doctor.state if COMPILED in k]
    doctor.add(
        Cause(
            id="compiled_submodule",
            severity="error",
            keys=keys,
            title=Text("A submodule compiled on its own: ._orig_mod. inside the keys"),
            explanation=Text(
                "A submodule was replaced by torch.compile(submodule) before saving, so its keys hold "
                "'._orig_mod.' in the middle ({keys}). With strict=False these tensors are skipped "
                "without a word and keep their initial values. Removing '_orig_mod.' gives the "
                "module's names.",
                keys=verbatim(_patterns(keys)),
            ),
            fix='for k in [k for k in state if "._orig_mod." in k]: '
            'state[k.replace("._orig_mod.", ".")] = state.pop(k)',
            torch_says=doctor.says(keys),
            groups=_groups(keys),
        )
    )
    doctor.rename(lambda k: k.replace(COMPILED, "."))


def _backbone_cause(doctor: _Doctor, prefix: str, n: int) -> None:
    keys = list(doctor.state)
    doctor.file_is = (
        "backbone",
        Text("the file is a backbone for the model's {prefix} submodule", prefix=prefix),
    )
    doctor.add(
        Cause(
            id="backbone",
            severity="error",
            keys=keys,
            title=Text('The file is the "{prefix}" submodule alone', prefix=prefix),
            explanation=Text(
                "Its {count} keys are this module's once {prefix!r} is put in front of them: it was saved "
                "from the submodule ({prefix}) alone, e.g. a base model without its head. Adding the "
                "prefix gives the module's names; the module has {n} keys in all.",
                count=len(keys),
                prefix=prefix,
                n=n,
            ),
            fix="known = model.state_dict()\n"
            f"for k in [k for k in state if k not in known]: state[{json.dumps(prefix)} + k] = state.pop(k)",
            torch_says=doctor.says(keys[:1]),
            groups=_groups(keys),
        )
    )
    doctor.rename(lambda k: prefix + k)


def _missing_shard_cause(doctor: _Doctor, keys: list[str], absent: dict[str, str]) -> None:
    files = sorted({absent[k] for k in keys})
    names = ", ".join(files)
    doctor.file_is = ("missing_shard", Text("the index names {names}, which is not here", names=names))
    doctor.add(
        Cause(
            id="missing_shard",
            severity="error",
            keys=keys,
            title=Text("A shard is not here: {names}", names=names),
            explanation=Text(
                "The index puts these {count} tensors in {names}, which was not given with the other "
                "shards. No fix in code can help: put the file beside the index (or download it again) "
                "and inspect the folder again.",
                count=len(keys),
                names=names,
            ),
            fix="",
            torch_says=doctor.says(keys),
            groups=_groups(keys),
        )
    )


def _tied_cause(doctor: _Doctor, aliases: dict[str, str]) -> None:
    keys = list(aliases)
    pairs = ", ".join(f"{json.dumps(k)}: state[{json.dumps(a)}]" for k, a in aliases.items())
    words = "; ".join(f"{k} = {a}" for k, a in aliases.items())
    doctor.add(
        Cause(
            id="tied_weights",
            severity="error",
            keys=keys,
            title=Text("A tied weight saved under one name only"),
            explanation=Text(
                "In this module these keys are the same tensor as another ({words}). The saver kept one "
                "name of each shared tensor (safetensors' save_model does; so does transformers' "
                "save_pretrained), so the other is missing; the value is in the file under the name it "
                "kept.",
                words=verbatim(words),
            ),
            fix=f"state.update({{{pairs}}})",
            torch_says=doctor.says(keys),
            groups=_groups(keys),
        )
    )


def _stats_cause(doctor: _Doctor, stats: list[str]) -> None:
    doctor.kept_initial += stats
    doctor.add(
        Cause(
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
            groups=_groups(stats),
        )
    )


def _saved_non_persistent_cause(doctor: _Doctor, saved: list[str]) -> None:
    doctor.add(
        Cause(
            id="non_persistent_saved",
            severity="error",
            keys=saved,
            title=Text("A non-persistent buffer in the file"),
            explanation=Text(
                "This module registers these buffers with persistent=False: state_dict() leaves them out "
                "and load_state_dict takes no value for them (the module computes its own). The file was "
                "saved from a version where they were persistent. Drop them."
            ),
            fix=f"for k in {keys_code(saved)}: state.pop(k)",
            torch_says=doctor.says(saved),
            groups=_groups(saved),
        )
    )


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
            groups=_groups(absent),
        )
    )


def _detail(key: str, got: torch.Tensor, want: torch.Tensor) -> KeyDetail:
    return KeyDetail(
        key=key,
        checkpoint_shape=_shape(got),
        checkpoint_dtype=dtype_name(got.dtype),
        module_shape=_shape(want),
        module_dtype=dtype_name(want.dtype),
    )


def _copies(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether load_state_dict can copy ``got`` into the module's ``want`` (of the same shape): a
    sparse, quantized or meta tensor makes it raise, where other mismatches are only listed."""
    if (got.layout == torch.strided and not got.is_meta and not got.is_quantized) or got.is_nested:
        return True
    try:
        with torch.no_grad():
            torch.empty_like(want).copy_(got)
    except Exception:
        return False
    return True


def _storage_causes(doctor: _Doctor, keys: list[str], expected: dict) -> None:
    """Tensors torch cannot copy from, by how they are stored; each made loadable, or (on meta, with
    no values) replaced by the module's own."""
    s = doctor.state
    meta = [k for k in keys if s[k].is_meta]
    quantized = [k for k in keys if k not in meta and s[k].is_quantized]
    sparse = [k for k in keys if k not in meta and k not in quantized and s[k].layout != torch.strided]
    stored = (
        (
            "sparse",
            sparse,
            Text("Stored sparse: {keys}", keys=verbatim(_patterns(sparse))),
            Text(
                "The file holds these {count} tensors in a sparse layout ({layout}). load_state_dict "
                "copies into the module's dense tensors and cannot copy from a sparse one: even "
                "strict=False raises. The fix makes them dense first.",
                count=len(sparse),
                layout=verbatim(", ".join(sorted({str(s[k].layout) for k in sparse}))),
            ),
            ".to_dense()",
        ),
        (
            "quantized",
            quantized,
            Text("Stored quantized: {keys}", keys=verbatim(_patterns(quantized))),
            Text(
                "The file holds these {count} tensors quantized ({dtype}). load_state_dict cannot copy a "
                "quantized tensor into the module's float ones: even strict=False raises. The fix "
                "dequantizes them (to float32), with the precision the quantization kept.",
                count=len(quantized),
                dtype=verbatim(_dtype_of(s, quantized)) if quantized else "",
            ),
            ".dequantize()",
        ),
        (
            "meta_values",
            meta,
            Text("No values in the file: {keys}", keys=verbatim(_patterns(meta))),
            Text(
                "The file holds these {count} tensors on the meta device: shapes without values (a model "
                "built on meta, saved before its weights were loaded). Nothing can be copied from them: "
                "even strict=False raises. The fix keeps the module's initial values for them.",
                count=len(meta),
            ),
            "",
        ),
    )
    for cause_id, found, title, explanation, method in stored:
        if not found:
            continue
        details = [_detail(k, s[k], expected[k]) for k in found]
        if not method:
            doctor.kept_initial += found
        value = f"state[k]{method}" if method else "model.state_dict()[k]"
        doctor.add(
            Cause(
                id=cause_id,
                severity="error",
                keys=found,
                title=title,
                explanation=explanation,
                fix=f"for k in {keys_code(found)}: state[k] = {value}",
                torch_says=doctor.says(found),
                details=details,
                groups=_groups(found, s, expected),
            )
        )


def _size_causes(doctor: _Doctor, module: nn.Module, mismatched: list[str], expected: dict) -> None:
    s = doctor.state
    transposed, reshaped, other = [], [], []
    for key in mismatched:
        got, want = s[key], expected[key]
        have, need = _shape(got), _shape(want)
        if len(have) == 2 and have[::-1] == need and not got.is_nested:
            transposed.append(key)
        elif not got.is_nested and got.numel() == want.numel() and got.layout == torch.strided:
            reshaped.append(key)
        else:
            other.append(key)
    if transposed:
        _transposed_cause(doctor, transposed, expected)
    if reshaped:
        _reshaped_cause(doctor, reshaped, expected)
    if other:
        groups = _groups(other, s, expected)
        throughout = len(other) > FEW or any("{" in g.pattern for g in groups)
        if throughout:
            _width_cause(doctor, module, other, expected, groups)
        else:
            _head_cause(doctor, other, expected, groups)


def _transposed_cause(doctor: _Doctor, keys: list[str], expected: dict) -> None:
    s = doctor.state
    doctor.add(
        Cause(
            id="transposed",
            severity="error",
            keys=keys,
            title=Text("Stored transposed: {keys}", keys=verbatim(_patterns(keys))),
            explanation=Text(
                "The file has these matrices transposed ({count} of them): a layer that stores (in, out) "
                "saves them so (Hugging Face's Conv1D in GPT-2), where nn.Linear keeps (out, in).",
                count=len(keys),
            ),
            fix=f"for k in {keys_code(keys)}: state[k] = state[k].t()",
            torch_says=doctor.says(keys),
            details=[_detail(k, s[k], expected[k]) for k in keys],
            groups=_groups(keys, s, expected),
        )
    )


def _reshaped_cause(doctor: _Doctor, keys: list[str], expected: dict) -> None:
    s = doctor.state
    groups = _groups(keys, s, expected)
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for k in keys:
        by_shape.setdefault(tuple(_shape(expected[k])), []).append(k)
    fix = "\n".join(
        f"for k in {keys_code(ks)}: state[k] = state[k].reshape({list(shape)})"
        for shape, ks in by_shape.items()
    )
    doctor.add(
        Cause(
            id="reshaped",
            severity="error",
            keys=keys,
            title=Text("Same elements, another shape: {keys}", keys=verbatim(_patterns(keys))),
            explanation=Text(
                "The file has these tensors with as many elements as the module's but another shape: a "
                "layer saved in another layout (a 1x1 convolution and a linear layer, a flattened table). "
                "Reshape them only if the element order is the same."
            ),
            fix=fix,
            torch_says=doctor.says(keys),
            details=[_detail(k, s[k], expected[k]) for k in keys],
            groups=groups,
        )
    )


def _width_cause(
    doctor: _Doctor, module: nn.Module, keys: list[str], expected: dict, groups: list[KeyGroup]
) -> None:
    s = doctor.state
    details = [_detail(k, s[k], expected[k]) for k in keys]
    dims = _dims(details)
    sizes = (
        "; ".join(f"{have} in the file where the model has {need} ({n})" for have, need, n in dims[:3])
        or "other sizes"
    )
    fields = _config_names(module, dims[0][1]) if dims else []
    config = (
        Text(
            " In the model's config, {fields} = {need}; the file was saved with {have}.",
            fields=verbatim(" / ".join(fields)),
            need=dims[0][1],
            have=dims[0][0],
        )
        if fields
        else verbatim("")
    )
    first = f"{dims[0][0]} where the model has {dims[0][1]}" if dims else "other sizes"
    doctor.file_is = (
        "other_width",
        Text("the file is a model of another width ({first})", first=verbatim(first)),
    )
    doctor.add(
        Cause(
            id="other_width",
            severity="error",
            keys=keys,
            title=Text("Another width: {count} tensors of other sizes", count=len(keys)),
            explanation=Text(
                "The sizes differ throughout the model ({sizes}): the file was saved from a model built "
                "with other sizes (another hidden size, number of heads or layers' width).{config} No "
                "fix in code can help: build the model with the file's sizes (its config), or take a "
                "checkpoint of this model's.",
                sizes=verbatim(sizes),
                config=config,
            ),
            fix="",
            torch_says=doctor.says(keys),
            details=details,
            groups=groups,
        )
    )


def _head_cause(doctor: _Doctor, keys: list[str], expected: dict, groups: list[KeyGroup]) -> None:
    s = doctor.state
    doctor.kept_initial += keys
    doctor.add(
        Cause(
            id="size_mismatch",
            severity="error",
            keys=keys,
            title=Text("Another size: {keys}", keys=verbatim(_patterns(keys))),
            explanation=Text(
                "The file has these {count} tensors with other sizes than the module (another vocabulary "
                "or number of classes: a head). Build the module with the file's sizes, or keep the "
                "module's own initial values for them, as the fix does (even strict=False refuses a "
                "size mismatch), and train them.",
                count=len(keys),
            ),
            fix=f"for k in {keys_code(keys)}: state[k] = model.state_dict()[k]",
            torch_says=doctor.says(keys),
            details=[_detail(k, s[k], expected[k]) for k in keys],
            groups=groups,
        )
    )


def _dtype_cause(doctor: _Doctor, changed: list[str], expected: dict) -> None:
    s = doctor.state
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
                "the file's dtype, cast the module first: model.to({dtype}) before loading.",
                dtype=verbatim(_dtype_of(s, changed)),
            ),
            fix="",
            torch_says=[],
            details=[_detail(k, s[k], expected[k]) for k in changed],
            groups=_groups(changed, s, expected),
        )
    )


def _dtype_of(state: dict, keys: list[str]) -> str:
    dtypes = {state[k].dtype for k in keys}
    return str(dtypes.pop()) if len(dtypes) == 1 else "dtype"


def _missing_cause(doctor: _Doctor, missing: list[str]) -> None:
    doctor.kept_initial += missing
    doctor.add(
        Cause(
            id="missing",
            severity="error",
            keys=missing,
            title=Text("Keys the file does not have: {keys}", keys=verbatim(_patterns(missing))),
            explanation=Text(
                "The module has these {count} tensors and the file has no value for them under any name. "
                "The fix keeps the module's initial values for them, which is what strict=False does "
                "without saying so: right for a new head on a pretrained body, wrong if the file is for "
                "another model.",
                count=len(missing),
            ),
            fix="state.update({k: v for k, v in model.state_dict().items() if k not in state})",
            torch_says=doctor.says(missing),
            groups=_groups(missing),
        )
    )


def _unexpected_cause(doctor: _Doctor, unexpected: list[str], module_keys: int) -> None:
    doctor.add(
        Cause(
            id="unexpected",
            severity="error",
            keys=unexpected,
            title=Text("Keys this module does not have: {keys}", keys=verbatim(_patterns(unexpected))),
            explanation=Text(
                "The file has these {count} tensors; the module (with {module_keys} keys) has nothing of "
                "that name, even with a prefix removed. Drop them if they belong to a part you left out "
                "(an optimizer, an EMA copy, a head you replaced, layers the module does not have).",
                count=len(unexpected),
                module_keys=module_keys,
            ),
            fix=f"for k in {keys_code(unexpected)}: state.pop(k)",
            torch_says=doctor.says(unexpected),
            groups=_groups(unexpected),
        )
    )


def _foreign_cause(doctor: _Doctor, kind: str, what: Text) -> None:
    """The file's structure says what it is (an optimizer's state): no fix, only what to do."""
    doctor.file_is = (kind, what)
    keys = list(doctor.state)
    doctor.add(
        Cause(
            id=kind,
            severity="error",
            keys=keys,
            title=Text("Not a model's state_dict: {what}", what=what),
            explanation=Text(
                "None of its {count} tensors is one of the module's, and no renaming makes them so; "
                "dropping them all would load nothing. Load it with what it was saved from.",
                count=len(keys),
            ),
            fix="",
            torch_says=[],
            groups=_groups(keys),
        )
    )


def _adapter_cause(doctor: _Doctor, module: nn.Module) -> None:
    keys = list(doctor.state)
    targets = sorted({_adapted(k) for k in keys if any(f".{m}." in f".{k}." for m in LORA)})
    present = [t for t in targets if _has_submodule(module, t)]
    prefix = "base_model.model." if all(k.startswith("base_model.model.") for k in keys) else ""
    counts = {"present": len(present), "count": len(targets)}
    doctor.file_is = (
        "adapter",
        Text(
            "the file is a PEFT LoRA adapter for {prefix}* ({present} of its {count} target modules are "
            "this model's)",
            prefix=verbatim(prefix),
            **counts,
        )
        if prefix
        else Text(
            "the file is a PEFT LoRA adapter ({present} of its {count} target modules are this model's)",
            **counts,
        ),
    )
    doctor.add(
        Cause(
            id="adapter",
            severity="error",
            keys=keys,
            title=Text("A LoRA adapter, not a model"),
            explanation=Text(
                "Its tensors are low-rank updates (lora_A, lora_B) for the modules {modules}, saved by "
                "PEFT under base_model.model.: they add to a base model's weights, they replace none. "
                "Load the base model's own checkpoint first, then the adapter with peft "
                "(PeftModel.from_pretrained(model, adapter_folder); merge_and_unload() gives a plain "
                "model).",
                modules=verbatim(_patterns(targets)),
            ),
            fix="",
            torch_says=[],
            groups=_groups(keys),
        )
    )


def _adapted(key: str) -> str:
    """The module a LoRA key adapts: base_model.model.h.0.attn.c_attn.lora_A.weight -> h.0.attn.c_attn."""
    path = key.removeprefix("base_model.model.")
    for marker in LORA:
        if f".{marker}" in path:
            return path.split(f".{marker}")[0]
    return path


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _other_architecture_cause(
    doctor: _Doctor, module: nn.Module, unexpected: list[str], missing: list[str]
) -> None:
    from app.doctor.likeness import closest  # builds the catalogue's tiny models: only on this path

    family = closest(unexpected)
    what = (
        Text("the file is a checkpoint of another architecture (its keys are {family}'s)", family=family)
        if family
        else Text("the file is a checkpoint of another architecture")
    )
    doctor.file_is = ("other_architecture", what)
    doctor.add(
        Cause(
            id="other_architecture",
            severity="error",
            keys=unexpected,
            title=Text("Another model's keys"),
            explanation=Text(
                "Fewer than half of the module's {n} tensors are in the file under any name ({missing} "
                "are missing: {missing_keys}), and the file has {count} keys the module has not "
                "({keys}). Dropping them and loading with strict=False would keep almost every tensor "
                "at its initial value, without a word: no fix is offered. Load it into the model it was "
                "saved from.",
                n=len(doctor.model.state_dict()),
                missing=len(missing),
                missing_keys=verbatim(_patterns(missing)),
                count=len(unexpected),
                keys=verbatim(_patterns(unexpected)),
            ),
            fix="",
            torch_says=doctor.says(unexpected + missing)[:2],
            groups=_groups(unexpected),
        )
    )
