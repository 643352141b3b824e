"""The benign objects a training script leaves in a checkpoint beside its tensors, read with a small
allow-list of safe globals; and, for anything else, which global and where in the file it sits.

torch's weights-only unpickler refuses every global it does not know. These are added, and no
other (each builds plain data; none runs code of the file):

- ``argparse.Namespace`` (a script's arguments), ``pathlib`` paths;
- NumPy scalars and arrays (``numpy.dtype``, ``numpy._core.multiarray.scalar`` and ``_reconstruct``,
  ``numpy.ndarray``; NumPy 1's ``numpy.core`` names too): read only when NumPy is installed;
- a subclass of ``dict`` / ``collections.OrderedDict`` of the file's own (``__main__.Config``): the
  pickle shows it built empty and then given items, so it is read *as* an OrderedDict, its items
  kept, its class never imported.

To tell which global sits where, the pickle is replayed by an unpickler that imports nothing: every
global becomes a stand-in that records how it was built.
"""

from __future__ import annotations

import argparse
import collections
import io
import pathlib
import pickle
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from pathlib import Path

from app.langs import Text

NAMED = {
    "argparse.Namespace": ("argparse", "Namespace"),
    "pathlib.Path": ("pathlib", "Path"),
    "pathlib.PosixPath": ("pathlib", "PosixPath"),
    "pathlib.WindowsPath": ("pathlib", "WindowsPath"),
    "pathlib.PurePath": ("pathlib", "PurePath"),
    "pathlib.PurePosixPath": ("pathlib", "PurePosixPath"),
    "pathlib.PureWindowsPath": ("pathlib", "PureWindowsPath"),
}
NUMPY = {
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
}
NUMPY_DTYPES = "numpy.dtypes."  # numpy.dtypes.Float64DType, ... (the classes of numpy 2's dtypes)
MAX_PLACES = 3  # places named for a refused global
REPLAYED_VALUES = 200_000  # values the replay visits to place globals: a bound on its time


def allowed_names() -> list[str]:
    return [
        *NAMED,
        *sorted(NUMPY),
        f"{NUMPY_DTYPES}*",
        "a dict / OrderedDict subclass (read as an OrderedDict)",
    ]


def _resolve(name: str) -> object | None:
    """The object an allowed name stands for (NumPy imported only when a file names it)."""
    if name in NAMED:
        module, attr = NAMED[name]
        return getattr({"argparse": argparse, "pathlib": pathlib}[module], attr)
    if name in NUMPY or (name.startswith(NUMPY_DTYPES) and name.count(".") == 2):
        try:
            import importlib

            module, _, attr = name.rpartition(".")
            return getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
    return None


# -- a replay of the pickle that imports nothing --------------------------------------------------


class _Stub:
    """What a global became in the replay: how it was called and what it was given."""

    __slots__ = ("_appended", "_args", "_items", "_name", "_state")

    def __init__(self, name: str, args: tuple = ()) -> None:
        self._name, self._args, self._state, self._items, self._appended = name, args, None, [], False

    def __setstate__(self, state: object) -> None:
        self._state = state

    def __setitem__(self, key: object, value: object) -> None:
        self._items.append((key, value))

    def append(self, value: object) -> None:
        self._appended = True

    def extend(self, values: object) -> None:
        self._appended = True

    @property
    def dict_like(self) -> bool:
        return not self._args and self._state in (None, {}) and not self._appended


def _stand_in(name: str) -> type:
    """A class for a global (NEWOBJ needs one): instances record their arguments."""

    def new(cls: type, *args: object) -> _Stub:
        return _Stub(name, args)

    return type(name.rpartition(".")[2] or "Global", (), {"__new__": new})


KNOWN = {("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set}


class _Replay(pickle.Unpickler):
    def __init__(self, data: io.BytesIO) -> None:
        super().__init__(data)
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> object:
        # Python 2 names (protocol 2 writes __builtin__), mapped as pickle and torch map them.
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        if (module, name) in KNOWN:
            return KNOWN[(module, name)]
        full = f"{module}.{name}"
        return self.classes.setdefault(full, _stand_in(full))

    def persistent_load(self, pid: object) -> object:
        return None  # a tensor's storage: not read


@dataclass
class Found:
    places: dict[str, list[str]] = field(default_factory=dict)  # global -> where its objects sit
    dict_like: dict[str, bool] = field(default_factory=dict)  # global -> every object built as a dict


def _pickle_bytes(path: Path, max_bytes: int) -> bytes | None:
    """The pickle that holds the file's structure: a torch zip's data.pkl, or a legacy file's."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if name is None or archive.getinfo(name).file_size > max_bytes:
                return None
            return archive.read(name)
    except zipfile.BadZipFile:
        pass
    size = path.stat().st_size
    if size > max_bytes:
        return None
    data = io.BytesIO(path.read_bytes())
    try:
        for _ in range(3):  # the legacy format: magic number, protocol version, sys info, then it
            pickle.Unpickler(data).load()
    except Exception:
        return None
    return data.read()


def replay(path: Path, max_bytes: int) -> Found:
    """Where each global of the file sits (keys from the top) and whether it is built as a dict."""
    found = Found()
    raw = _pickle_bytes(path, max_bytes)
    if raw is None:
        return found
    try:
        obj = _Replay(io.BytesIO(raw)).load()
    except Exception:  # a pickle the replay cannot follow: the places stay unknown
        return found
    pending: list[tuple[object, list[str]]] = [(obj, [])]
    seen = 0
    while pending and seen < REPLAYED_VALUES:
        value, where = pending.pop()
        seen += 1
        if isinstance(value, _Stub):
            found.places.setdefault(value._name, []).append(".".join(where) or "(the top)")
            found.dict_like[value._name] = found.dict_like.get(value._name, True) and value.dict_like
            pending.extend((v, [*where, str(k)]) for k, v in reversed(value._items))
        elif isinstance(value, dict):
            pending.extend((v, [*where, str(k)]) for k, v in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            pending.extend((v, [*where, str(i)]) for i, v in reversed(list(enumerate(value))))
    return found


@dataclass
class Allowance:
    """What torch.load may take beyond its defaults for one file, and what it may not."""

    globals: list[object] = field(default_factory=list)  # for torch.serialization.safe_globals
    names: list[str] = field(default_factory=list)  # the allowed globals the file holds
    as_dict: list[str] = field(default_factory=list)  # dict subclasses read as OrderedDict
    refused: Text | None = None


def allowance(path: Path, unsafe: list[str], max_bytes: int) -> Allowance:
    """For the globals torch would refuse (``unsafe``), those of the allow-list, dict subclasses read
    as OrderedDict, and the refusal of the first other one (its name and where it sits)."""
    out = Allowance()
    others = []
    for name in unsafe:
        name = name if "." in name else f"builtins.{name}"  # torch names a builtin bare: exec
        obj = _resolve(name)
        if obj is not None:
            out.globals.append(obj)
            out.names.append(name)
        else:
            others.append(name)
    if not others:
        return out
    found = replay(path, max_bytes)
    for name in others:
        if found.dict_like.get(name) and found.places.get(name):
            out.globals.append((collections.OrderedDict, name))
            out.as_dict.append(name)
            continue
        places = found.places.get(name, [])
        where = ", ".join(places[:MAX_PLACES]) + (
            f" (+{len(places) - MAX_PLACES})" if len(places) > MAX_PLACES else ""
        )
        out.refused = Text(
            "torch.load(weights_only=True) refused it: UnpicklingError: the file holds an object of {name} "
            "at {where}, a global torch does not allow, and the inspector never runs a file's code. Read "
            "beside tensors: {allowed}. If you trust the file, load it with "
            "torch.serialization.safe_globals([{name}])",
            name=name,
            where=where or "(a place the inspector could not follow)",
            allowed=", ".join(allowed_names()),
        )
        return out
    return out
