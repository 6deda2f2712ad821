"""The dataset card (README.md) of a release: YAML front matter for the HF hub + Markdown sections."""
from __future__ import annotations

import json
from typing import Any

import polars as pl
import yaml

from g2u_tasks.thoughts.families import load_family

# What each release column holds (the card's schema table).
COLUMN_DOCS: dict[str, str] = {
    "image": "the visual thought: PNG bytes (HF Image struct {bytes, path})",
    "source_image": "the benchmark image the thought was generated from (HF Image struct)",
    "thought_id": "sha256 of key_json: same key, same thought",
    "benchmark": "benchmark name",
    "item_id": "item id, unique within the benchmark",
    "image_sha256": "sha256 of the item's image(s)",
    "family": "edit family (the kind of generative act)",
    "family_version": "short hash of the family's prompt template",
    "prompt": "the rendered edit prompt given to the generator",
    "prompt_source": "template | self | planner",
    "generator": "generator backend",
    "generator_model": "generator model id (local paths reduced to their last part)",
    "generator_revision": "generator model revision",
    "generator_params": "generator parameters (JSON)",
    "conditioning": "what the generator conditioned on: source_pixels, source_in_context, text_only, none (identity)",
    "gen_text": "text the generator wrote with the image (e.g. BAGEL's think-mode plan); null otherwise",
    "seed": "generation seed",
    "key_json": "canonical JSON of everything that changes the image (the thought key)",
    "blob_sha256": "sha256 of the PNG bytes in `image`",
    "width": "thought width in pixels",
    "height": "thought height in pixels",
    "psnr": "PSNR (dB, capped at 100) of the thought against the source image",
    "ssim": "SSIM of the thought against the source image",
    "dataset_version": "store dataset version (Delta version) this release was cut from",
    "question": "benchmark question (null when the items were not available)",
    "options": "answer options as a JSON object letter -> text",
    "answer": "ground-truth answer",
    "category": "benchmark category",
    "question_type": "mcq | yes_no | open | numeric",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def _md_table(frame: pl.DataFrame) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _counts_table(rows: pl.DataFrame) -> pl.DataFrame:
    counts = rows.group_by("benchmark", "family").len("n")
    wide = counts.pivot(on="family", index="benchmark", values="n", sort_columns=True).sort("benchmark")
    wide = wide.fill_null(0).with_columns(pl.sum_horizontal(pl.exclude("benchmark")).alias("total"))
    return wide


def _templates(families: pl.DataFrame) -> list[str]:
    """Template text of each family whose built-in version matches the released one."""
    out = []
    for name, version in families.select("family", "family_version").unique().sort("family").iter_rows():
        try:
            fam = load_family(name)
        except ValueError:
            continue
        if fam.version == version:
            out.append(f"**{name}** (`{version}`):\n\n```text\n{fam.template.strip()}\n```")
    return out


def front_matter(name: str, licence: str, n_rows: int) -> str:
    meta = {
        "license": licence,
        "pretty_name": f"G2U visual thoughts: {name}",
        "tags": ["g2u", "visual-thoughts", "synthetic", "image-editing"],
        "task_categories": ["visual-question-answering", "image-to-image"],
        "size_categories": [_size_category(n_rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def render_card(*, name: str, version: int, date: str, licence: str, rows: pl.DataFrame,
                schema: list[tuple[str, str]], shards: list[str], has_items: bool, has_source: bool) -> str:
    """The README.md text. `rows` = the released columns (images left out); `schema` = (column, type)."""
    n = rows.height
    generators = (rows.group_by("generator", "generator_model", "generator_revision", "generator_params")
                  .len("thoughts").sort("generator", "generator_model", nulls_last=True))
    families = (rows.group_by("family", "family_version", "prompt_source").len("thoughts")
                .sort("family", "family_version", "prompt_source"))
    fidelity = (rows.group_by("family").agg(pl.len().alias("thoughts"), pl.col("psnr").mean().round(2).alias("psnr_mean"),
                                            pl.col("ssim").mean().round(4).alias("ssim_mean")).sort("family"))
    schema_rows = pl.DataFrame({"column": [c for c, _ in schema], "type": [t for _, t in schema],
                                "description": [COLUMN_DOCS.get(c, "") for c, _ in schema]})
    templates = _templates(families)
    items_note = ("Item fields (question, options, answer, category) come from the benchmark items."
                  if has_items else "Item fields (question, options, answer, category) were not available and are null.")
    source_note = "`source_image` holds the benchmark image each thought was made from." if has_source else (
        "Source benchmark images are not included; join on `benchmark`, `item_id`, `image_sha256`.")
    parts = [
        front_matter(name, licence, n),
        f"# {name}: G2U visual thoughts (dataset version {version})\n",
        "## What it is\n",
        f"{n} *visual thoughts*: images a generative model made from benchmark items by a controlled edit "
        "(an *edit family* such as detail enhancement, context expansion or structural visualisation), "
        "for Generation-to-Understanding (G2U) experiments: the thought is fed back to an understanding "
        f"model next to (or instead of) the original image. Cut from dataset version {version} of a G2U "
        f"thought store (committed {date}); only successful thoughts are included. {items_note} {source_note}\n",
        "## How it was generated\n",
        "Each row's `key_json` lists everything that changed its image; `thought_id` is its sha256.\n",
        "### Generators\n", _md_table(generators) + "\n",
        "### Edit families and prompt sources\n",
        "`family_version` is a short hash of the prompt template; `prompt_source` says whether the prompt "
        "came from the template, the model itself (self) or a planner.\n",
        _md_table(families) + "\n",
        *(["### Templates\n", "\n\n".join(templates) + "\n"] if templates else []),
        "### Fidelity to the source image\n", _md_table(fidelity) + "\n",
        "## Schema\n",
        f"Files: {', '.join(f'`{s}`' for s in shards)}. Image columns are Hugging Face `Image` features "
        "(struct of `bytes` and `path`); the Parquet schema metadata declares them, so `datasets` decodes "
        "them as images. `image.bytes` are the exact PNG bytes whose sha256 is `blob_sha256`.\n",
        _md_table(schema_rows) + "\n",
        "## Counts\n", "Thoughts by benchmark and edit family:\n", _md_table(_counts_table(rows)) + "\n",
        "## Licence\n",
        f"`{licence}`. The benchmark images, questions and answers keep the licences of their benchmarks.\n",
        "## How to load\n",
        "From this folder (checksums of every file are in `checksums.sha256`: `sha256sum -c checksums.sha256`).\n",
        "```python\nfrom datasets import load_dataset\n"
        "ds = load_dataset(\"parquet\", data_files={\"train\": \"data/train-*.parquet\"})[\"train\"]\n"
        "ds[0][\"image\"]  # PIL image\n```\n",
        "```sql\n-- DuckDB\nSELECT benchmark, family, count(*) FROM read_parquet('data/train-*.parquet') GROUP BY ALL;\n```\n",
        "```python\nimport polars as pl\ndf = pl.read_parquet(\"data/train-*.parquet\")\n"
        "png = df[\"image\"].struct.field(\"bytes\")[0]\n```\n",
        "```python\nimport pandas as pd\ndf = pd.read_parquet(\"data\")\npng = df[\"image\"][0][\"bytes\"]\n```\n",
    ]
    return "\n".join(parts)


def release_json(**fields: Any) -> str:
    return json.dumps(fields, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
