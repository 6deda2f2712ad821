"""Shared check: a fixture script run into a fresh folder reproduces the committed fixture files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq


def assert_script_reproduces(script: Path, committed_dir: Path, tmp_path: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Run `script --out tmp_path`; every committed file (outside the top folders in `skip`) comes out
    byte for byte (Parquet: the same table when another pyarrow wrote it). Returns the files compared."""
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    committed = sorted(p.relative_to(committed_dir) for p in committed_dir.rglob("*")
                       if p.is_file() and p.relative_to(committed_dir).parts[0] not in skip)
    assert committed == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in committed:
        new, old = tmp_path / relative, committed_dir / relative
        if relative.suffix == ".parquet" and pq.read_metadata(new).created_by != pq.read_metadata(old).created_by:
            assert pq.read_table(new).equals(pq.read_table(old)), relative  # another pyarrow writes other bytes
        else:
            assert new.read_bytes() == old.read_bytes(), relative
    return committed
