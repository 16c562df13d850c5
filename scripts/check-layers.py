#!/usr/bin/env python3
"""Checks dbmazz's module layering: no import cycle between files, and the data flow one way.

Every `crate::…` and `super::…` path in a file's non-test code is an edge from that file to the
file that defines the longest matching module. The check fails when

- two or more files import each other, directly or around a loop (a strongly connected
  component of more than one file), or
- a file under `src/pipeline/`, `src/starrocks/` or `src/ndjson.rs` imports anything under
  `src/postgres/` (sinks and the pipeline never know the source), or a file under `src/postgres/`
  imports a sink.

`mod x;` declarations are not imports. Test modules (`#[cfg(test)]`) are left out.
Usage: scripts/check-layers.py [src]   (exit 0 when clean, 1 with the offending edges)
"""

import re
import sys
from pathlib import Path


def module_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(["crate", *parts])


def strip_tests(text: str) -> str:
    """Removes `#[cfg(test)]` items (the attribute and the braced block after it)."""
    out = []
    i = 0
    while True:
        at = text.find("#[cfg(test)]", i)
        if at < 0:
            out.append(text[i:])
            break
        out.append(text[i:at])
        brace = text.find("{", at)
        semi = text.find(";", at)
        if semi >= 0 and (brace < 0 or semi < brace):
            i = semi + 1
            continue
        depth = 0
        j = brace
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    return "".join(out)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def paths_in(text: str):
    """Yields every path used in `use` trees and in code, expanded from `{…}` groups."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        yield from expand(m.group(1).replace("\n", " "))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        yield m.group(1)


def expand(tree: str):
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        yield tree.split(" as ")[0]
        return
    head, rest = tree.split("{", 1)
    body = rest[: rest.rfind("}")]
    depth = 0
    item = ""
    items = []
    for c in body:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += c
    items.append(item)
    for it in items:
        if it:
            yield from expand(head + it)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = {module_of(p, root): p for p in root.rglob("*.rs")}
    edges = {m: set() for m in files}
    for mod, path in files.items():
        text = strip_tests(strip_comments(path.read_text()))
        for raw in paths_in(text):
            parts = raw.split("::")
            if parts[0] == "super":
                base = mod.split("::")
                while parts and parts[0] == "super":
                    base = base[:-1]
                    parts = parts[1:]
                parts = base + parts
            elif parts[0] != "crate":
                continue
            for n in range(len(parts), 0, -1):
                target = "::".join(parts[:n])
                if target in files:
                    if target != mod and not mod.startswith(target + "::"):
                        edges[mod].add(target)
                    break
    problems = []
    # Tarjan's strongly connected components.
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in comps:
        inner = sorted(f"{a} -> {b}" for a in comp for b in edges[a] if b in comp)
        problems.append("import cycle between " + ", ".join(comp) + ":\n    " + "\n    ".join(inner))
    downstream = ("crate::pipeline", "crate::starrocks", "crate::ndjson")
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            if a.startswith(downstream) and b.startswith("crate::postgres"):
                problems.append(f"{a} imports the source: {b}")
            if a.startswith("crate::postgres") and b.startswith(("crate::starrocks", "crate::ndjson")):
                problems.append(f"{a} imports a sink: {b}")
    for p in problems:
        print(p)
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(files)} files, {n_edges} edges: " + ("clean" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
