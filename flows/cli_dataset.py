"""`g2u dataset list|show|diff|verify|vacuum|publish`: dataset versions of the thought store and releases."""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Annotated, Any, Optional

import fsspec
import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from g2u_tasks.store import dataset
from g2u_tasks.config import RunConfig, load_config
from g2u_tasks.store.thought_store import TEMP_GRACE_S, StoreIntegrityError, TempFile, ThoughtStore

DEFAULT_CONFIG = "configs/demo.yaml"

dataset_app = typer.Typer(help="Dataset versions of the thought store: list, show, diff, verify, vacuum, publish.",
                          no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help=f"run config (default {DEFAULT_CONFIG})")]
StoreOpt = Annotated[Optional[str], typer.Option("--store", help="store URI; overrides the config's store")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json")]
VersionArg = Annotated[str, typer.Argument(help="dataset version number, or 'latest'")]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# ---- helpers ---------------------------------------------------------------------------------
@contextmanager
def _errors() -> Iterator[None]:
    """Bad input (unknown version, missing config, existing release) -> message and exit code 2;
    damaged store contents (a torn manifest commit) -> message and exit code 1."""
    try:
        yield
    except StoreIntegrityError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # paths stay whole
        raise typer.Exit(1) from None
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def _config(config: str | None, store: str | None) -> RunConfig | None:
    """The config when given, or the default one when no --store is given."""
    if config is None and store is not None:
        return None
    return load_config(config or DEFAULT_CONFIG)


def _open(config: str | None, store: str | None) -> ThoughtStore:
    cfg = _config(config, store)
    root = store or cfg.store
    return ThoughtStore(root, storage_options=(cfg.storage_options if cfg else None) or None)


def _fs_options(config: str | None, store: str | None, uri: str) -> dict[str, Any] | None:
    """The config's fsspec options when `uri` is on the store's object store (else the environment's)."""
    cfg = _config(config, store)
    root = store or (cfg.store if cfg else "")
    protocol = fsspec.utils.get_protocol(uri)
    if not cfg or protocol == "file" or fsspec.utils.get_protocol(root) != protocol:
        return None
    return {k: v for k, v in cfg.storage_options.items() if not (k.isupper() or k.startswith("aws_"))}


def _version(st: ThoughtStore, text: str) -> int:
    if text == "latest":
        latest = st.version()
        if latest is None:
            raise ValueError(f"the store at {st.root} has no dataset version yet")
        return latest
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"VERSION must be a number or 'latest', got {text!r}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, pl.DataFrame):
        return [_jsonable(r) for r in obj.to_dicts()]
    if is_dataclass(obj):
        return _jsonable({**asdict(obj), **({"ok": obj.ok} if hasattr(obj, "ok") else {})})
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False))


def _table(frame: pl.DataFrame, title: str | None = None) -> None:
    table = Table(title=title, title_justify="left")
    for col in frame.columns:
        table.add_column(col, justify="right" if frame[col].dtype.is_numeric() else "left", overflow="fold")
    for row in frame.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                v = f"{v:.4g}"
            elif isinstance(v, datetime):
                v = v.strftime("%Y-%m-%d %H:%M:%S %Z")
            cells.append("" if v is None else str(v))
        table.add_row(*cells)
    console.print(table)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A bar on stderr (hidden when stderr is not a terminal); yields an on_progress(done, total)."""
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(label, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, got {fmt!r}")


# ---- commands --------------------------------------------------------------------------------
@dataset_app.command("list")
def list_cmd(config: ConfigOpt = None, store: StoreOpt = None, fmt: FormatOpt = "table") -> None:
    """Every dataset version: date, ok thoughts, what it added, generators, families, benchmarks."""
    _check_format(fmt)
    with _errors():
        frame = dataset.list_versions(_open(config, store))
    if fmt == "json":
        _print_json(frame)
    elif frame.is_empty():
        console.print("no dataset version yet")
    else:
        _table(frame, "dataset versions")


@dataset_app.command("show")
def show_cmd(version: VersionArg, config: ConfigOpt = None, store: StoreOpt = None, fmt: FormatOpt = "table") -> None:
    """One version: summary, counts by benchmark x family x status, generators, prompts, fidelity."""
    _check_format(fmt)
    with _errors():
        st = _open(config, store)
        detail = dataset.show_version(st, _version(st, version))
    if fmt == "json":
        _print_json(detail)
        return
    s = detail["summary"]
    console.print(f"[bold]dataset v{s['version']}[/bold] · {s['date']:%Y-%m-%d %H:%M:%S %Z} · "
                  f"{s['ok']} ok, {s['failed']} failed thought(s) over {s['items']} item(s) · "
                  f"{s['blob_bytes']:,} blob bytes")
    _table(detail["counts"], "thoughts by benchmark, family and status")
    _table(detail["generators"], "generators")
    _table(detail["prompts"], "families, template versions and prompt sources")
    _table(detail["fidelity"], "fidelity (means)")


@dataset_app.command("diff")
def diff_cmd(v1: VersionArg, v2: VersionArg, config: ConfigOpt = None, store: StoreOpt = None,
             fmt: FormatOpt = "table",
             ids: Annotated[bool, typer.Option("--ids", help="list the thought ids too")] = False) -> None:
    """Thoughts added and removed between two versions, by benchmark and family."""
    _check_format(fmt)
    with _errors():
        st = _open(config, store)
        d = dataset.diff_versions(st, _version(st, v1), _version(st, v2))
    if fmt == "json":
        _print_json(d)
        return
    console.print(f"v{d['v1']} -> v{d['v2']}: [green]+{d['added']}[/green] added, [red]-{d['removed']}[/red] removed")
    if not d["by_benchmark_family"].is_empty():
        _table(d["by_benchmark_family"], "changes by benchmark and family")
    if ids:
        for tid in d["added_ids"]:
            typer.echo(f"+ {tid}")
        for tid in d["removed_ids"]:
            typer.echo(f"- {tid}")


def _problems_table(rows: list[dict], title: str) -> None:
    if rows:
        _table(pl.DataFrame(rows), title)


@dataset_app.command("verify")
def verify_cmd(version: Annotated[Optional[str], typer.Argument(help="dataset version, or 'latest'")] = None,
               release: Annotated[Optional[str], typer.Option("--release", help="release folder/URI to check")] = None,
               config: ConfigOpt = None, store: StoreOpt = None, fmt: FormatOpt = "table") -> None:
    """Blobs of a version exist and match their sha256; with --release, a release's checksums.

    With a VERSION, also lists orphan temp files that killed writers left (`vacuum` removes them;
    they do not fail the check). Exit code 1 when anything is missing or corrupt."""
    _check_format(fmt)
    if version is None and release is None:
        raise typer.BadParameter("give a VERSION, --release URI, or both")
    reports: dict[str, Any] = {}
    temps: list[TempFile] | None = None
    with _errors():
        if version is not None:
            st = _open(config, store)
            n = _version(st, version)
            with _progress(f"verifying blobs of v{n}") as on_progress:
                reports["version"] = dataset.verify_version(st, n, on_progress=on_progress)
            temps = st.temp_files()
        if release is not None:
            reports["release"] = dataset.verify_release(release, _fs_options(config, store, release))
    ok = all(r.ok for r in reports.values())  # orphan temp files are leftovers, not damage
    if fmt == "json":
        _print_json({**reports, **({"temp_files": temps} if temps is not None else {}), "ok": ok})
    else:
        if "version" in reports:
            r = reports["version"]
            console.print(f"dataset v{r.version}: {r.checked} ok thought(s), {r.blobs} blob(s) checked: "
                          f"{len(r.missing)} missing, {len(r.mismatched)} mismatched, {len(r.invalid)} invalid")
            _problems_table(r.missing, "missing blobs")
            _problems_table(r.mismatched, "blobs whose bytes do not match blob_sha256")
            _problems_table(r.invalid, "ok thoughts without a usable blob reference")
            _print_temps(temps or [])
        if "release" in reports:
            r = reports["release"]
            console.print(f"release {r.uri}: {r.checked} file(s) checked: {len(r.missing)} missing, "
                          f"{len(r.mismatched)} mismatched, {len(r.unlisted)} not in checksums"
                          + (f"; {r.error}" if r.error else ""))
            for label, files in (("missing", r.missing), ("mismatched", r.mismatched), ("unlisted", r.unlisted)):
                for f in files:
                    console.print(f"  {label}: {f}")
        console.print("[green]OK[/green]" if ok else "[red]FAILED[/red]")
    if not ok:
        raise typer.Exit(1)


def _print_temps(temps: list[TempFile]) -> None:
    if not temps:
        return
    old = sum(1 for t in temps if t.age_s is not None and t.age_s >= TEMP_GRACE_S)
    console.print(f"{len(temps)} orphan temp file(s) left by killed writers ({old} older than "
                  f"{_duration(TEMP_GRACE_S)}; `g2u dataset vacuum` removes them):")
    for t in temps:
        console.print(f"  {t.path}  ({t.size} bytes, {_age(t.age_s)})", markup=False)


def _parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"expected a duration like 90s, 30m, 1h or 2d, got {text!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT_S[unit] and seconds % _UNIT_S[unit] == 0:
            return f"{int(seconds // _UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


def _age(age_s: float | None) -> str:
    return "age unknown" if age_s is None else f"{_duration(round(max(age_s, 0)))} old"


GraceOpt = Annotated[str, typer.Option("--older-than", help="grace period: only temp files older than this go "
                                                          "(90s, 30m, 1h, 2d)")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="list what would be removed, remove nothing")]


@dataset_app.command("vacuum")
def vacuum_cmd(older_than: GraceOpt = _duration(TEMP_GRACE_S), dry_run: DryRunOpt = False,
               config: ConfigOpt = None, store: StoreOpt = None, fmt: FormatOpt = "table") -> None:
    """Remove orphan temp files (`*.tmp-*`) that killed writers left in blobs/, pending/ and runs/.

    Only files older than the grace period go: a younger one may belong to a writer still running.
    Committed blobs, journal entries and the manifest are never touched."""
    _check_format(fmt)
    grace = _parse_duration(older_than)
    with _errors():
        removed, kept = _open(config, store).remove_temp_files(grace, dry_run=dry_run)
    if fmt == "json":
        _print_json({"dry_run": dry_run, "older_than_s": grace, "removed": removed, "kept": kept})
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(removed)} orphan temp file(s) older than {_duration(grace)}; "
                  f"kept {len(kept)} younger one(s)")
    for t in removed:
        console.print(f"  {verb}: {t.path}  ({t.size} bytes, {_age(t.age_s)})", markup=False)
    for t in kept:
        console.print(f"  kept: {t.path}  ({_age(t.age_s)})", markup=False)


@dataset_app.command("publish")
def publish_cmd(version: VersionArg,
                name: Annotated[str, typer.Option("--name", help="release name (folder name)")],
                to: Annotated[Optional[str], typer.Option("--to", help="destination URI (default <store>/releases/NAME)")] = None,
                licence: Annotated[str, typer.Option("--licence", "--license", help="licence id for the card")] = dataset.DEFAULT_LICENCE,
                with_source: Annotated[bool, typer.Option("--with-source", help="embed source images and item fields loaded from the config's benchmarks")] = False,
                overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a different release already there")] = False,
                config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Write a self-describing release (Parquet with embedded images, README card, checksums)."""
    with _errors():
        st = _open(config, store)
        n = _version(st, version)
        items = sources = None
        if with_source:
            from g2u_tasks.jobs import load_items

            items, sources = dataset.items_and_sources(load_items(_config(config, None)))
        with _progress(f"publishing v{n}") as on_progress:
            result = dataset.publish(st, n, name, to_uri=to, licence=licence, items=items, source_images=sources,
                                     storage_options=_fs_options(config, store, to) if to else None,
                                     overwrite=overwrite, on_progress=on_progress)
    state = "written" if result.written else "unchanged (already published)"
    console.print(f"release {result.name} of dataset v{result.dataset_version}: {result.rows} thought(s), "
                  f"{len(result.files)} data file(s), {state}")
    typer.echo(result.uri)
