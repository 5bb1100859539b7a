"""The config's sections as the steps see them, with every default taken from the one place
that holds it: workflow/schemas/config.schema.yaml.

Snakemake validates the whole config against the schema (and fills its defaults) before any
rule runs; the steps' command lines and Python callers (tests, benchmarks, a GPU machine
without Snakemake) get the same defaults here, so a dataclass never repeats one.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def _defaults(node: dict):
    """The default of a schema node; an object's default is filled from its properties'."""
    if node.get("type") == "object" and "properties" in node:
        out = copy.deepcopy(node.get("default", {}))
        for k, sub in node["properties"].items():
            if "default" in sub or sub.get("type") == "object":
                out.setdefault(k, _defaults(sub))
        return out
    return copy.deepcopy(node.get("default"))


def _merge(node: dict, given: dict, where: str) -> dict:
    """`given` over the node's defaults, nested objects merged; unknown keys are errors."""
    out = _defaults(node)
    props = node.get("properties", {})
    for k, v in given.items():
        if k not in props:
            raise ValueError(f"unknown setting {where}.{k} (known: {', '.join(sorted(props))})")
        sub = props[k]
        out[k] = _merge(sub, v, f"{where}.{k}") if sub.get("type") == "object" and "properties" in sub and isinstance(v, dict) else v
    return out


def section(name: str, given: dict | None = None) -> dict:
    """The config section `name` (e.g. "train", "labels"): `given` over the schema's defaults."""
    props = schema()["properties"]
    if name not in props:
        raise ValueError(f"no config section {name!r} in {SCHEMA}")
    return _merge(props[name], given or {}, name)


def description(path: str) -> str:
    """The schema's description of a key, e.g. description("train.lr_G")."""
    node = schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node.get("description", "")


# --- config/README.md: the GAN sections' tables are generated from the schema -----------------

GENERATED = ("train", "face", "base", "transfer", "evaluate")


def _rows(node: dict, prefix: str):
    for k, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            yield from _rows(sub, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", sub


def markdown_table(name: str) -> str:
    """The keys of section `name` with their defaults and descriptions, as a Markdown table."""
    import json

    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, sub in _rows(schema()["properties"][name], ""):
        lines.append(f"| `{key}` | `{json.dumps(sub.get('default'))}` | {sub.get('description', '')} |")
    return "\n".join(lines)


def update_readme(text: str) -> str:
    """config/README.md with each `<!-- schema: NAME -->` ... `<!-- /schema -->` block regenerated."""
    import re

    return re.sub(r"(<!-- schema: (\w+) -->\n).*?(<!-- /schema -->)",
                  lambda m: m.group(1) + markdown_table(m.group(2)) + "\n" + m.group(3), text, flags=re.S)


if __name__ == "__main__":  # python -m steps.settings: regenerate config/README.md's tables
    readme = SCHEMA.parents[2] / "config" / "README.md"
    readme.write_text(update_readme(readme.read_text()))
