"""What the doctor says of a checkpoint, as the JSON API gives it: the report's models, the caps one
inspection obeys, and the refusal of a file that cannot be inspected."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from app.doctor.diagnosis import Diagnosis
from app.errors import Refusal
from app.lab.spec import LabSpec
from app.langs import Text

SHARED_NAMES = 8  # a tensor's shared_with lists this many of its group; `shared` lists them all
NESTED_SHAPES = 64  # a nested tensor's component shapes listed


class CheckpointError(Refusal):
    """A file that cannot be inspected; the text says why (torch's own words where it refused)."""


class CheckpointTooLarge(CheckpointError):
    status = 413


class UploadError(Refusal):
    """An upload refused before or while it arrives: too large, too slow, malformed, no slot."""

    def __init__(self, status: int, text: Text) -> None:
        super().__init__(text, status=status)


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # the file, and what a zip declares once unpacked
    header_max_bytes: int  # a safetensors JSON header
    max_entries: int  # tensors and values listed, zip members (and twice that in dicts and lists)
    legacy_max_bytes: int = 1024**3  # the legacy format is read whole into memory
    pickle_max_bytes: int = 64 * 1024**2  # a torch zip's data.pkl: the structure, not the tensors


class TensorEntry(BaseModel):
    location: list[str] = Field(description="Keys from the top of the file down to the tensor.")
    name: str = Field(description="The location joined with dots, e.g. model.linear.weight.")
    shape: list[int]
    dtype: str
    elements: int
    bytes: int = Field(description="Bytes the tensor's data takes (a sparse tensor: its indices and values).")
    shared_with: list[str] = Field(
        default_factory=list,
        description=f"Other tensors on the same storage (tied weights, views): the first {SHARED_NAMES};"
        " `shared[shared_group]` lists the whole group.",
    )
    shared_group: int | None = Field(None, description="Index in the report's `shared` of its group.")
    layout: str = Field("strided", description="strided, sparse_coo, sparse_csr, ..., nested or jagged.")
    nested_shapes: list[list[int]] | None = Field(
        None, description=f"A nested tensor's components' shapes (the first {NESTED_SHAPES})."
    )


class ValueEntry(BaseModel):
    location: list[str]
    name: str
    type: str = Field(examples=["int"])
    value: str = Field(description="repr(), cut short.")


class TreeNode(BaseModel):
    name: str = Field(description="One segment of a module path, e.g. linear.")
    path: str
    tensors: int
    elements: int
    bytes: int
    dtype: str | None = Field(None, description="A tensor's dtype, on leaves.")
    shape: list[int] | None = None
    children: list[TreeNode] = Field(default_factory=list)


class DtypeTotal(BaseModel):
    tensors: int
    elements: int
    bytes: int


class LoadOutcome(BaseModel):
    spec: LabSpec | None = Field(None, description="The lab module it was loaded into (or none).")
    architecture: str | None = Field(
        None, description="The architecture it was loaded into (GET /api/architectures), built on meta."
    )
    config: str | None = Field(
        None, description="The transformers config.json it was loaded into (built on meta), as named."
    )
    target: str = Field("", description="What it was loaded into, in a few words (a class, an id).")
    state_dict: str = Field(description="Where in the file the loaded state_dict is ('' for the top).")
    strict: str = Field(description='"ok", or torch\'s refusal of load_state_dict(state), type: message.')
    non_strict: str = Field(description="The same with strict=False: size mismatches still refuse.")
    missing_keys: list[str] = Field(description="The module's keys the file lacks (strict=False).")
    unexpected_keys: list[str] = Field(description="The file's keys the module lacks (strict=False).")
    size_mismatches: list[dict[str, str | list[int]]] = Field(
        description="Keys in both with other shapes: key, checkpoint, module."
    )
    diagnosis: Diagnosis | None = Field(
        None,
        description="Why it does not load, cause by cause, each with its fix and torch's outcome after it.",
    )
    script: str = Field(
        "",
        description="A whole script to paste and run: the loading lines, the model, the fixes, "
        "load_state_dict(state, strict=True); its outcome is the diagnosis' after_fixes.",
    )


class ShardFile(BaseModel):
    name: str = Field(description="The file's name as uploaded (the index names shards by it).")
    format: str
    tensors: int
    bytes: int = Field(description="Bytes of the tensors it holds.")


class ShardProblem(BaseModel):
    kind: str = Field(
        description="missing_from_shards (the index names it, no shard holds it), not_in_index, "
        "in_two_shards, wrong_shard, shard_not_uploaded, total_size"
    )
    key: str = Field(description="The tensor (or, for shard_not_uploaded, the file; total_size: '').")
    detail: str


class Shards(BaseModel):
    index: str | None = Field(description="The index file's name (model.safetensors.index.json), if sent.")
    files: list[ShardFile]
    total_size: int | None = Field(description="The index's metadata.total_size.")
    tensor_bytes: int = Field(description="Bytes of the tensors the shards hold, each key once.")
    problems: list[ShardProblem] = Field(description="What the index and the shards disagree on.")


class CheckpointReport(BaseModel):
    format: str = Field(
        examples=["safetensors"],
        description="safetensors, torch_zip, torch_legacy or torch_dcp (a DCP folder)",
    )
    file_bytes: int
    tensors: list[TensorEntry]
    values: list[ValueEntry] = Field(description="Everything else: epoch, step, hyper-parameters ...")
    tree: list[TreeNode] = Field(description="The tensors by module path, with totals per node.")
    dtypes: dict[str, DtypeTotal]
    total_elements: int
    total_bytes: int = Field(description="Sum over tensors; shared storage counted once per tensor.")
    unique_bytes: int = Field(description="Bytes of distinct storage: what the file really holds.")
    shared: list[list[str]] = Field(description="Groups of tensors that share one storage.")
    state_dicts: list[str] = Field(description="Dicts of tensors a module could load, by location.")
    metadata: dict[str, str] = Field(default_factory=dict, description="safetensors __metadata__.")
    load: LoadOutcome | None = None
    torch_version: str
    shards: Shards | None = Field(None, description="A sharded checkpoint: its files and index, checked.")
    notes: list[dict[str, str]] = Field(
        default_factory=list,
        description="What the reader noticed beside the tensors, by language: files it did not read, a DCP "
        "folder and how to convert it, globals read through the allow-list.",
    )


class PageReport(BaseModel):
    """What the page shows of a report: at most a few hundred of each kind of thing, so that a file of
    100,000 tensors costs the server neither a long parse nor a long render; the totals stay exact."""

    report: CheckpointReport = Field(description="Cut short: tree, values, groups and lists.")
    tensors: int = Field(description="Tensors in the file (the report's list is left out).")
    hidden: dict[str, int] = Field(description="What was left out, by part of the report.")
