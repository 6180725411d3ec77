"""The control plane's OpenAPI document exercised by schemathesis (property-based requests
generated from /openapi.json): no 5xx, and every response matches the document."""

import subprocess
import sys
from pathlib import Path

from conftest import ControlBroker


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path):
    b = ControlBroker(tmp_path)
    try:
        cli = Path(sys.executable).parent / "schemathesis"
        out = subprocess.run(
            [str(cli), "run", f"http://127.0.0.1:{b.api_port}/openapi.json",
             "-H", f"Authorization: Bearer {b.admin}",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
             "--max-examples", "25", "--generation-deterministic", "--no-color"],
            capture_output=True, text=True, timeout=600,
            cwd=tmp_path,  # schemathesis keeps a cache in its working directory
        )
        print(out.stdout[-3000:])
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    finally:
        b.kill()
