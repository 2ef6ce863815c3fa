"""The CRD schemas the manifest tests validate against are the upstream files, unedited:
each copy in tests/tools/schemas/ still has the checksum its SOURCES.md row records."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent / "schemas"
ROW = re.compile(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", re.M)


def test_every_vendored_schema_matches_its_recorded_checksum() -> None:
    recorded = dict(ROW.findall((SCHEMAS / "SOURCES.md").read_text()))
    on_disk = {p.name for p in SCHEMAS.iterdir() if p.suffix in (".yaml", ".json")}
    assert on_disk == set(recorded), "every schema file has a SOURCES.md row, and every row a file"
    for name, digest in recorded.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name
