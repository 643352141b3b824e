"""Schemathesis against /openapi.json, in-process: generated requests for every operation, no 5xx,
no status the schema does not document, no response that violates the schema."""

from __future__ import annotations

import atexit
import shutil
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings

# Uploads it generates go to a directory of their own, capped small: garbage in, 4xx out.
UPLOADS = tempfile.mkdtemp(prefix="mre-schemathesis-")
atexit.register(shutil.rmtree, UPLOADS, ignore_errors=True)
APP = create_app(Settings(checkpoint_tmp_dir=UPLOADS, checkpoint_max_bytes=256 * 1024))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid and invalid requests both: a malformed one must get a documented 4xx, never a 5xx.
schema.config.generation.update(modes=list(schemathesis.GenerationMode))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 40  # per operation: about 20 s for the whole API on the 2-core CI machine


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
