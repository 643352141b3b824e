"""Pasted configs that open in the lab, kept content-addressed so the lab's URL can name one:
``/?preset=config:<digest>``, the digest the sha256 of the config's canonical JSON (keys sorted,
compact), in lowercase base32 (52 characters: a lab preset id has at most 64).

A config is untrusted: it can ask for a model of any size. So one is kept only after the isolated
child (``app.architectures.isolated``) built it under its time and memory limits and counted its
parameters and buffers, and only when that count is within the lab's cap
(MRE_LAB_CONFIG_MAX_ELEMENTS): the lab then builds it with real values in the server's own process
(known model types only, no remote code). The count is kept with it and checked against the cap on
every read, so a cap lowered later refuses it too.

The store is a folder (MRE_LAB_CONFIG_DIR), not this process's memory: every worker of a server
(MRE_WORKERS) and the next start read the same files, so a permalink made on one worker opens on
another and after a restart. It is bounded: at most MRE_LAB_CONFIG_FILES files of at most
MRE_ARCHITECTURE_CONFIG_MAX_BYTES each, the least recently opened removed first. A digest it does
not hold (never opened in the lab here, or removed since) is a 404 saying how to open it again. The
folder must be this user's and writable by no one else: the counts in it are trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.architectures.catalogue import ArchitectureError
from app.architectures.configs import canonical
from app.architectures.isolated import ConfigReport
from app.architectures.lab import config_preset
from app.architectures.memo import Flights
from app.lab.presets import Preset
from app.lab.spec import SpecError, UnknownPreset
from app.langs import Text

PREFIX = "config"  # the lab's preset ids config:<digest>
DIGEST = re.compile(r"[a-z2-7]{52}")
MAX_FILE = 1024**2  # a kept file is a config of at most MRE_ARCHITECTURE_CONFIG_MAX_BYTES and a count
MAX_FILES = 1000
MAX_ELEMENTS = 1_000_000  # MRE_LAB_CONFIG_MAX_ELEMENTS by default: ten times the tiny catalogue's
_presets: Flights[tuple[Preset, int]] = Flights(32)  # built on meta once per digest, per process


class ConfigTooLarge(SpecError):
    status = 413


def digest(config: dict) -> str:
    """The sha256 of the config's canonical JSON, in lowercase base32 without padding."""
    raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    return base64.b32encode(hashlib.sha256(raw).digest()).decode().lower().rstrip("=")


def preset_id(key: str) -> str:
    return f"{PREFIX}:{key}"


def too_large(elements: int, cap: int) -> Text:
    """Why a config does not open in the lab: said on its page, and by the refusals."""
    return Text(
        "its parameters and buffers hold {elements} elements, over the lab's cap of {cap} "
        "(MRE_LAB_CONFIG_MAX_ELEMENTS): the lab builds a model with real values in the server itself",
        elements=f"{elements:,}",
        cap=f"{cap:,}",
    )


def elements(report: ConfigReport) -> int:
    """What the lab's cap counts of a config the isolated child built: the elements of its
    parameters (a tied one once) and of its buffers."""
    return report.tree.totals.parameters + report.tree.totals.buffers


def default_folder() -> Path:
    """The system's temporary folder, one store per user."""
    return Path(tempfile.gettempdir()) / f"mre-lab-configs-{os.getuid()}"


@dataclass(frozen=True)
class ConfigStore:
    folder: Path
    max_files: int = MAX_FILES
    max_elements: int = MAX_ELEMENTS

    def fits(self, elements: int) -> bool:
        return elements <= self.max_elements

    def put(self, config: dict, elements: int) -> str:
        """Keep a checked config that the isolated child built and counted (``elements``: its
        parameters, a tied one once, and buffers); its digest. Over the cap: ConfigTooLarge."""
        if not self.fits(elements):
            raise ConfigTooLarge(
                ("preset",), Text("config.json: {why}", why=too_large(elements, self.max_elements))
            )
        key = digest(config)
        path = self._folder() / f"{key}.json"
        if path.exists():
            os.utime(path)  # opened again: the last to be removed
        else:
            partial = path.with_name(f".{key}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({"config": config, "elements": elements}, sort_keys=True))
            partial.replace(path)  # whole or absent, for every worker reading the folder
        self._prune()
        return key

    def get(self, key: str) -> tuple[dict, int] | None:
        """The config kept under a digest and its count; None when not kept (or not readable as
        one this store wrote)."""
        if not DIGEST.fullmatch(key):
            return None
        path = self._folder() / f"{key}.json"
        try:
            with path.open("rb") as f:
                kept = json.loads(f.read(MAX_FILE))
            config, elements = canonical(kept["config"]), kept["elements"]
        except (OSError, ValueError, KeyError, TypeError, ArchitectureError):
            return None
        if digest(config) != key or not isinstance(elements, int):
            return None
        return config, elements

    def preset(self, lab_id: str) -> Preset:
        """The lab preset of ``config:<digest>`` (app.lab.presets' source for ids config:...):
        UnknownPreset (404) when no such config is kept, ConfigTooLarge (413) over the cap."""
        key = lab_id.partition(":")[2]

        def made() -> tuple[Preset, int]:
            kept = self.get(key)
            if kept is None:
                raise UnknownPreset(("preset",), unknown(lab_id, self.max_files))
            config, elements = kept
            # The child counted it within a cap when it was kept; checked again here before the
            # server builds it, against this store's cap.
            if not self.fits(elements):
                raise ConfigTooLarge(
                    ("preset",), Text("{id}: {why}", id=lab_id, why=too_large(elements, self.max_elements))
                )
            return config_preset(lab_id, config, elements), elements

        found, elements = _presets.get(key, made)
        if not self.fits(elements):
            raise ConfigTooLarge(
                ("preset",), Text("{id}: {why}", id=lab_id, why=too_large(elements, self.max_elements))
            )
        return found

    def _folder(self) -> Path:
        """The folder, made if missing; refused unless it is this user's alone to write."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ArchitectureError(
                503,
                Text(
                    "the lab's config store {folder} must belong to this server's user and be writable by "
                    "no one else (MRE_LAB_CONFIG_DIR)",
                    folder=str(self.folder),
                ),
            )
        return self.folder

    def _prune(self) -> None:
        """The least recently opened files removed, down to ``max_files``."""
        kept = []
        for path in self.folder.glob("*.json"):
            try:
                kept.append((path.stat().st_mtime_ns, path))
            except OSError:  # removed by another worker meanwhile
                continue
        for _, path in sorted(kept)[: max(0, len(kept) - self.max_files)]:
            path.unlink(missing_ok=True)


def unknown(lab_id: str, max_files: int) -> Text:
    return Text(
        "{id}: no such config is kept here. The lab keeps the last {n} configs opened from their "
        "config.json page (MRE_LAB_CONFIG_DIR); paste it again at /architectures and choose "
        '"Open it in the lab".',
        id=lab_id[:80],
        n=f"{max_files:,}",
    )
