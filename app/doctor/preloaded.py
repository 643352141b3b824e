"""Imported by the inspectors' forkserver, and only there, when the server has architectures on:
transformers and the model classes of every catalogue architecture, so that an inspection into an
architecture builds it in its child in milliseconds. Without it each child imported transformers
and its modeling code again: ~2 CPU-seconds for a 100-byte file into llama_8b (hardening issue 20,
item 4), and two looping clients starved every other inspection. Each child still builds its own
fresh module (a load mutates it); only the imports, pure functions of the code, are shared."""

from __future__ import annotations

import contextlib

from app.architectures import catalogue


def _import_models() -> None:
    for arch_id in catalogue.ARCHITECTURES:
        # A build on meta imports its modeling module and costs no memory; a catalogue entry that
        # cannot build here is refused later, in the child, with transformers' own words. (An
        # exception other than ImportError escaping a preload would end the forkserver.)
        with contextlib.suppress(Exception):
            catalogue.build(arch_id, "meta")


_import_models()
