"""Edit families: YAML files with a prompt template; version = short hash of the template text."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from g2u_tasks.records import Item, sha256_hex

BUILTIN_DIR = Path(__file__).parent / "builtin_families"
BUILTINS = ("detail_enhancement", "context_expansion", "structural_visualisation", "identity")


@dataclass(frozen=True)
class EditFamily:
    name: str
    description: str
    template: str
    reference: dict[str, Any] = field(default_factory=dict)  # weight-free operator for the reference generator

    @property
    def version(self) -> str:
        return sha256_hex(self.template)[:8]

    def render(self, item: Item) -> str:
        """The edit prompt for one item; unknown placeholders are an error naming the family."""
        options = "".join(f"\n{k}. {v}" for k, v in item.options.items())
        fields = {"question": item.question, "options": options, "category": item.category or "",
                  "benchmark": item.benchmark}
        try:
            return self.template.format(**fields).strip()
        except KeyError as exc:
            raise ValueError(f"family {self.name}: template uses unknown placeholder {exc}") from None


def _read(path: Path) -> EditFamily:
    data = yaml.safe_load(path.read_text())
    missing = {"name", "template"} - set(data or {})
    if missing:
        raise ValueError(f"family file {path.name}: missing keys {sorted(missing)}")
    return EditFamily(
        name=data["name"],
        description=data.get("description", ""),
        template=data["template"],
        reference=data.get("reference") or {},
    )


def load_family(name: str, families_dir: str | Path | None = None) -> EditFamily:
    """Find `<name>.yaml` in `families_dir` first, then among the built-ins."""
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
