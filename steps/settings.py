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


# --- config/README.md: generated whole from the schema --------------------------------------

def _rows(node: dict, prefix: str):
    """(dotted key, schema node) of every leaf under `node`; a mapping of names (subjects, synth)
    lists the keys of one entry."""
    props = node.get("properties") or (node.get("additionalProperties") or {}).get("properties") \
        or (node.get("items") or {}).get("properties") or {}
    for k, sub in props.items():
        if sub.get("type") == "object" and "properties" in sub:
            yield from _rows(sub, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", sub


def markdown_table(node: dict) -> str:
    """The keys under a section with their defaults and descriptions, as a Markdown table."""
    import json

    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, sub in _rows(node, ""):
        default = f"`{json.dumps(sub['default'])}`" if "default" in sub else "required"
        lines.append(f"| `{key}` | {default} | {sub.get('description', '')} |")
    return "\n".join(lines)


def config_readme() -> str:
    """config/README.md: the schema's description, then each section's (its rules, what it is,
    a table of its keys)."""
    root = schema()
    out = ["# Configuration", "", "<!-- generated from workflow/schemas/config.schema.yaml by "
           "`python -m steps.settings`; a test fails when it is stale -->", "", root["description"].strip(), ""]
    for name, node in root["properties"].items():
        rules = f" — {node['x-rules']}" if "x-rules" in node else ""
        out += [f"## `{name}`{rules}", "", node.get("description", "").strip(), ""]
        if list(_rows(node, "")):
            out += [markdown_table(node), ""]
    return "\n".join(out)


if __name__ == "__main__":  # python -m steps.settings: regenerate config/README.md
    (SCHEMA.parents[2] / "config" / "README.md").write_text(config_readme())


# --- the whole config: presets and short, pointed errors ---------------------------------------

PRESETS = SCHEMA.parents[1] / "presets"


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, nested mappings merged key by key (over's values win)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def preset(name: str) -> dict:
    """The settings of preset `name` (workflow/presets/NAME.yaml)."""
    import yaml

    path = PRESETS / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ValueError(f"config preset: {name!r} is not a preset (known: {known})")
    return yaml.safe_load(path.read_text()) or {}


def with_preset(config: dict) -> dict:
    """The config with its preset (`preset`, default the schema's) under every key it sets itself:
    explicit keys win, the preset fills the rest, the schema's defaults what neither sets."""
    name = config.get("preset", schema()["properties"]["preset"]["default"])
    return deep_merge(preset(name), {**config, "preset": name})


def _where(path) -> str:
    """config.train.lr_G, config.transfers[0].source: where a problem is, as a path."""
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def config_errors(config: dict) -> list[str]:
    """What is wrong with `config`, one short line per problem, naming the key and what it allows
    (the schema validator's own message prints the whole schema, thousands of lines)."""
    import difflib

    from jsonschema import Draft202012Validator

    lines = []
    for e in sorted(Draft202012Validator(schema()).iter_errors(config), key=lambda e: list(map(str, e.path))):
        where = _where(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            allowed = sorted(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - set(allowed)):
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                lines.append(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
        elif e.validator == "enum":
            lines.append(f"{where}: {e.instance!r} is not allowed; one of: {', '.join(map(str, e.validator_value))}")
        elif e.validator == "required":
            lines.append(f"{where}: {e.message}")
        else:
            what = e.schema.get("description", "")
            lines.append(f"{where}: {e.message}" + (f" ({what})" if what else ""))
    return lines
