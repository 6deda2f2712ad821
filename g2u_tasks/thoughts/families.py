"""Edit families: YAML files with a prompt template; version = short hash of the template text.

A template is data from a file anyone may hand us, and `str.format` would evaluate attribute and
index access in it (`{question.__class__.__mro__}` walks the object graph into the stored prompt).
So templates may hold only the plain named placeholders `render` fills: no attribute or index
access, no conversion, no format spec. They are checked when a family is built (so when it is
loaded), and errors name the family and the file."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from g2u_tasks.records import Item, sha256_hex

BUILTIN_DIR = Path(__file__).parent / "builtin_families"
IDENTITY = "identity"  # the source image itself: never sent to a generator
RECONSTRUCTION = "reconstruction"  # the generator asked to reproduce the source: its artifact floor
CONTROLS = (IDENTITY, RECONSTRUCTION)  # families that add no information to the image
BUILTINS = ("detail_enhancement", "context_expansion", "structural_visualisation", IDENTITY, RECONSTRUCTION)
PLACEHOLDERS = ("question", "options", "category", "benchmark")  # what `render` fills
# A family name is a file stem: no separators, so a config cannot point outside the family folders.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def check_template(template: Any, where: str) -> None:
    """Refuse anything but plain {question} / {options} / {category} / {benchmark} placeholders."""
    if not isinstance(template, str):
        raise ValueError(f"{where}: template must be text, got {type(template).__name__}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"{where}: template is not a valid format string ({exc}); write literal braces as {{{{ }}}}") \
            from None
    for _, name, spec, conversion in parts:
        if name is None:  # literal text only
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"{where}: template placeholder {shown} is not allowed; use only "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (no attribute or index access, conversion "
                "or format spec)")


@dataclass(frozen=True)
class EditFamily:
    name: str
    description: str
    template: str
    reference: dict[str, Any] = field(default_factory=dict)  # weight-free operator for the reference generator

    def __post_init__(self) -> None:
        check_template(self.template, f"family {self.name}")

    @property
    def calls_generator(self) -> bool:
        return self.name != IDENTITY

    @property
    def version(self) -> str:
        return sha256_hex(self.template)[:8]

    def render(self, item: Item) -> str:
        """The edit prompt for one item (the template holds only known plain placeholders)."""
        options = "".join(f"\n{k}. {v}" for k, v in item.options.items())
        fields = {"question": item.question, "options": options, "category": item.category or "",
                  "benchmark": item.benchmark}
        return self.template.format(**fields).strip()


def _read(path: Path) -> EditFamily:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"family file {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"family file {path}: expected a mapping with name and template")
    missing = {"name", "template"} - set(data)
    if missing:
        raise ValueError(f"family file {path.name}: missing keys {sorted(missing)}")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise ValueError(f"family file {path}: {key} must be text")
    if not isinstance(data.get("reference") or {}, dict):
        raise ValueError(f"family file {path}: reference must be a mapping (op, params)")
    try:
        return EditFamily(
            name=data["name"],
            description=data.get("description", ""),
            template=data["template"],
            reference=data.get("reference") or {},
        )
    except ValueError as exc:
        raise ValueError(f"family file {path}: {exc}") from None


def load_family(name: str, families_dir: str | Path | None = None) -> EditFamily:
    """Find `<name>.yaml` in `families_dir` first, then among the built-ins."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"edit family name {name!r} is not a plain name (letters, digits, _ and -)")
    dirs = ([Path(families_dir)] if families_dir else []) + [BUILTIN_DIR]
    for d in dirs:
        path = d / f"{name}.yaml"
        if path.exists():
            fam = _read(path)
            if fam.name != name:
                raise ValueError(f"family file {path.name} declares name {fam.name!r}")
            return fam
    known = sorted(p.stem for d in dirs if d.exists() for p in d.glob("*.yaml"))
    raise ValueError(f"unknown edit family {name!r}; known: {', '.join(known)}")


def load_families(names: list[str], families_dir: str | Path | None = None) -> list[EditFamily]:
    return [load_family(n, families_dir) for n in names]
