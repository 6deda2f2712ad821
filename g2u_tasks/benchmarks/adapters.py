"""Declaration-driven loading: `load_benchmark_spec(name, source)` -> `Item`s.

The benchmark's declaration (g2u_tasks/benchmarks/table.py) picks the format; rows are renamed with
its `hf_columns` (HF exports only), converted by its row and item hooks (g2u_tasks/benchmarks/hooks.py),
and turned into Items by the generic loader (g2u_tasks/benchmarks/loaders.py). Columns the Item has no
field for stay in `Item.extra`. Custom TSVs (authors' MyVQABench): the image is the FIRST path of
`final_image_path_ori` (relative to the images root, default `<dir of the TSV>/images`, i.e. LMUData
layout), else a base64 `image` cell (VisThink), else `<root>/<img_root_map(ori_Bench)>/<index>.jpg|.png`.

Image files are read through `loaders.ImageSource`, under the same policy as every other image
reference: inside the benchmark file's folder or a configured root (`images.roots`; an explicit
`images_root` counts as one), http(s) only when allowed. A relative `images_root` is taken from the
benchmark file's folder.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import posixpath
from typing import Any, Iterator, Mapping

import fsspec

from g2u_tasks.benchmarks.hooks import as_list
from g2u_tasks.benchmarks.loaders import (
    URI_SCHEME, ImageProblem, ImageSource, TsvCell, image_policy, iter_benchmark,
)
from g2u_tasks.benchmarks.loaders import cell_text
from g2u_tasks.benchmarks.table import BenchmarkSpec, resolve
from g2u_tasks.config import ImagesConfig
from g2u_tasks.records import Item

_MMBENCH_V11 = ("MMBench_DEV_EN_V11", "MMBench_TEST_EN_V11", "MMBench_DEV_CN_V11", "MMBench_TEST_CN_V11")
_MMBENCH = ("MMBench_DEV_EN", "MMBench_TEST_EN", "MMBench_DEV_CN", "MMBench_TEST_CN", "MMBench_DEV_KO", "MMBench",
            "MMBench_CN", "MMBench_V11", "MMBench_CN_V11")


def load_benchmark_spec(name: str, source: str, **options: Any) -> list[Item]:
    """Every item of `iter_benchmark_spec(name, source, **options)`, as a list."""
    return list(iter_benchmark_spec(name, source, **options))


def iter_benchmark_spec(
    name: str,
    source: str,
    *,
    format: str | None = None,
    limit: int | None = None,
    storage_options: dict | None = None,
    images_root: str | None = None,
    benchmark: str | None = None,
    **load_options: Any,
) -> Iterator[Item]:
    """Items of benchmark `name` (a spec name or alias) from `source`, made as they are iterated to.

    format: one of the spec's formats; default from the file suffix (.parquet/.jsonl -> hf-parquet,
    .tsv -> custom-tsv for specs that read it, else vlmevalkit-tsv). images_root: where relative image
    paths live (custom TSV, QSpatial_scannet); relative to the benchmark file's folder, and an allowed
    image root besides `images.roots` (default `<folder>/images`, inside the folder). benchmark: the name stamped on items (default: the
    table's spelling of `name`, e.g. "Spatial457_L5"). load_options: passed to the generic loader
    (`iter_benchmark`, e.g. `images`, the image-reference policy)."""
    spec, spelled = resolve(name)
    fmt = format or detect_format(spec, source)
    if fmt not in spec.formats:
        raise ValueError(f"benchmark {spec.name!r}: format {fmt!r} not supported; supported: {spec.formats}")
    label = benchmark or spelled
    options = dict(storage_options or {})
    policy = image_policy(load_options.pop("images", None))
    fs, path = fsspec.core.url_to_fs(source, **options)
    folder = posixpath.dirname(path)
    root = images_root_of(fs, folder, images_root, options)
    if images_root is not None:  # an explicit root is an allowed one
        policy = policy.model_copy(update={"roots": [*policy.roots, root]})
    ctx = _Context(spec, fmt, label, root, options, limit, fs, folder, policy)
    items = iter_benchmark(label, source, question_type=spec.question_type, limit=limit,
                           storage_options=storage_options, prepare_rows=ctx.prepare, images=policy, **load_options)
    return map(ctx.finish, items)


def images_root_of(fs: Any, folder: str, images_root: str | None, storage_options: dict) -> str:
    """The images root as a reference the loaders read: an absolute local path or a URI. Default
    `<folder>/images`; a relative `images_root` is joined to the benchmark file's folder, once."""
    if images_root is not None and URI_SCHEME.match(images_root):
        root_fs, root = fsspec.core.url_to_fs(images_root, **storage_options)
    else:
        rel = "images" if images_root is None else images_root
        root_fs, root = fs, rel if posixpath.isabs(rel) or os.path.isabs(rel) else posixpath.join(folder, rel)
    if "file" in ((root_fs.protocol,) if isinstance(root_fs.protocol, str) else root_fs.protocol):
        return os.path.normpath(root)
    return root_fs.unstrip_protocol(posixpath.normpath(root))


def detect_format(spec: BenchmarkSpec, source: str) -> str:
    suffix = source.lower().rsplit(".", 1)[-1]
    if suffix in ("parquet", "jsonl"):
        return "hf-parquet"
    return "custom-tsv" if "custom-tsv" in spec.formats else "vlmevalkit-tsv"


@dataclasses.dataclass
class _Context:
    spec: BenchmarkSpec
    fmt: str
    label: str
    images_root: str  # an absolute local path or a URI (images_root_of)
    storage_options: dict
    limit: int | None
    fs: Any  # the benchmark file's filesystem and folder
    folder: str
    policy: ImagesConfig
    image_errors: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def hf(self) -> bool:
        return self.fmt == "hf-parquet"

    def prepare(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.hf:
            rows = [rename_columns(row, self.spec.hf_columns) for row in rows]
        if self.spec.row_step is not None:
            rows = self.spec.row_step(rows, self)
        if self.fmt == "custom-tsv":
            rows = _custom_images(rows, self)
        return rows

    def finish(self, item: Item) -> Item:
        if self.spec.item_step is not None:
            item = self.spec.item_step(item, self)
        if item.item_id in self.image_errors:
            item = dataclasses.replace(item, image_error=self.image_errors[item.item_id])
        return item


# ---------------------------------------------------------------- helpers


def rename_columns(row: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Simultaneous rename; "a.b" reads field b of struct a. Unlisted columns pass through."""
    out = {k: v for k, v in row.items() if k not in mapping}
    for src, dst in mapping.items():
        head, _, tail = src.partition(".")
        if head not in row:
            continue
        value = row[head]
        if tail:
            value = value.get(tail) if isinstance(value, dict) else None
        if value is not None or dst not in out:
            out[dst] = value
    return out


def _custom_images(rows: list[dict], ctx: _Context) -> list[dict]:
    """The authors' MyVQABench image lookup, read through the loaders' ImageSource (same confinement
    and remote policy); errors kept per index for `finish`."""
    source = ImageSource(ctx.fs, ctx.folder, ctx.storage_options, ctx.policy)
    try:
        for position, row in enumerate(rows):
            if ctx.limit is not None and position >= ctx.limit:
                break
            index = (cell_text(row.get("index")) or "").strip()
            listed = as_list(row.get("final_image_path_ori"))
            if listed:
                row["image_path"] = listed[0]
                candidates = [listed[0]]  # only the first image is sent
            elif isinstance(row.get("image"), TsvCell) or cell_text(row.get("image")) is not None:
                continue  # base64 image cell (VisThink style), read when its item is made
            else:
                folder = img_root_map(cell_text(row.get("ori_Bench")) or ctx.label)
                candidates = [f"{folder}/{index}.jpg", f"{folder}/{index}.png"]
            row["image"] = None
            problems = []
            for path in candidates:
                written = path.strip()
                ref = written if URI_SCHEME.match(written) or posixpath.isabs(written) else \
                    posixpath.join(ctx.images_root, written)
                try:
                    row["image"] = base64.b64encode(source.read(ref)).decode("ascii")
                except ImageProblem as exc:
                    # ImageSource checks confinement before opening: "not found" never reveals a file outside
                    missing = str(exc).startswith("image file not found")
                    problems.append(None if missing else str(exc) if ref == written else f"{written!r}: {exc}")
                    continue
                row["image_path"] = path
                break
            if row["image"] is None and index:  # a blank index is refused by the loader anyway
                refused = [p for p in problems if p]  # the first refusal says it; the .png twin adds nothing
                ctx.image_errors[index] = "image 0: " + (refused[0] if refused else
                                                         f"image file not found: {' or '.join(candidates)}")
    finally:
        source.close()
    return rows


def img_root_map(dataset: str) -> str:
    """VLMEvalKit's image folder for a dataset name (vlmeval/dataset/image_base.py)."""
    for part, folder in (("MM_NIAH", "MMNIAH"), ("CRPE", "CRPE"), ("OCRVQA", "OCRVQA"), ("QSpatial", "QSpatial")):
        if part in dataset:
            return folder
    if dataset == "COCO_VAL":
        return "COCO"
    if dataset in _MMBENCH_V11:
        return "MMBench_V11"
    return "MMBench" if dataset in _MMBENCH else dataset
