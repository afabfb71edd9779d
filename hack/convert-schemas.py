#!/usr/bin/env python3
"""Make kubernetes-validate's schemas standalone for kubeconform: each schema refers to the shared
`/api/_definitions.json#/$defs/NAME` (which refer to each other as `#/$defs/NAME`); every such
`$ref` becomes `#/$defs/NAME` and each schema file carries the definitions it needs
(transitively) under its own `$defs`. The `$id`s go: kubeconform loads files by path.
Usage: convert-schemas.py SOURCE_DIR OUT_DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")


def rewrite(node: Any, needed: set[str]) -> Any:
    """``node`` with its references made local; the names it refers to are added to ``needed``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$id":
                continue
            if k == "$ref" and isinstance(v, str) and v.startswith(PREFIXES):
                name = v.split("/$defs/", 1)[1]
                needed.add(name)
                out[k] = "#/$defs/" + name
            else:
                out[k] = rewrite(v, needed)
        return out
    if isinstance(node, list):
        return [rewrite(v, needed) for v in node]
    return node


def main(src: Path, dst: Path) -> None:
    defs: dict[str, Any] = {}
    refs: dict[str, set[str]] = {}
    for name, schema in json.loads((src / "_definitions.json").read_text())["$defs"].items():
        refs[name] = set()
        defs[name] = rewrite(schema, refs[name])
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.json")):
        if path.name in ("_definitions.json", "all.json"):
            continue
        needed: set[str] = set()
        schema = rewrite(json.loads(path.read_text()), needed)
        todo, seen = list(needed), set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(refs.get(name, ()))
        if seen:
            schema["$defs"] = {name: defs[name] for name in sorted(seen)}
        (dst / path.name).write_text(json.dumps(schema))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
