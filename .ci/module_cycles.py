#!/usr/bin/env python3
"""Import cycles between the modules of a crate, and the direction of its layers.

Units: each top-level module (`name.rs` or the folder `name/`) is one unit, except that each child
of a layer folder (see LAYERS) is a unit of its own (`net::tls`, `enforce::admission`; the folder's
`mod.rs` is the unit `net`), so that moving modules into a layer folder hides no cycle. Every
reference a unit makes to another is read into a graph: `crate::a::b` paths wherever they appear
(use lines, paths in code, grouped and nested imports such as `crate::{net::{tls, upstream}, wire}`;
tests included), and inside a layer folder `super::child` (from a child) or `child::` (from its
`mod.rs`). Two checks, each printed with the edges that break it; exit 1 when either fails:
- cycles: the graph's strongly connected components of two or more units (none is tolerated);
- layers: a unit of a layer folder referring to a unit of a higher layer folder (LAYERS lists each
  root's layer folders lowest first; top-level modules outside them are not ranked).
Usage: .ci/module_cycles.py proxy/src [policy/src]
Comments are not read (a `crate::x` in prose or a doc link is no dependency); a line's code after a
`//` inside a string literal is missed too (rare: a URL and a path on one line).
Not for: cycles inside one unit's folder (they do not count)."""
import os
import re
import sys

# Layer folders per crate root, lowest first: a layer may use the ones before it, never one after.
LAYERS = {
    "proxy/src": ["wire", "net", "admin", "session", "enforce", "server", "ops", "cli"],
}

def layers_of(root):
    return LAYERS.get(os.path.normpath(root), [])


def rust_files(path):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".rs"))


def units(root):
    """unit name -> its files; a layer folder's children are units, its mod.rs is the folder's."""
    layers = layers_of(root)
    found = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            found.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path) and entry in layers:
            for child in sorted(os.listdir(path)):
                sub = os.path.join(path, child)
                if child == "mod.rs":
                    found.setdefault(entry, []).append(sub)
                elif child.endswith(".rs"):
                    found.setdefault(f"{entry}::{child[:-3]}", []).append(sub)
                elif os.path.isdir(sub):
                    found.setdefault(f"{entry}::{child}", []).extend(rust_files(sub))
        elif os.path.isdir(path):
            found.setdefault(entry, []).extend(rust_files(path))
    return found


def use_paths(text, start):
    """The paths of the use tree that starts at text[start] (after `crate::`), each a list of
    segments, and where the tree ends."""
    paths, i, prefix = [], start, []
    while True:
        m = re.compile(r"\s*([A-Za-z_][A-Za-z_0-9]*|\{)").match(text, i)
        if not m:
            return [prefix] if prefix else [], i
        if m.group(1) == "{":
            i = m.end()
            while True:
                sub, i = use_paths(text, i)
                paths += [prefix + p for p in sub]
                m2 = re.compile(r"\s*(,|\})").match(text, i)
                if not m2:
                    return paths, i
                i = m2.end()
                if m2.group(1) == "}":
                    return paths, i
                if re.compile(r"\s*\}").match(text, i):
                    return paths, re.compile(r"\s*\}").match(text, i).end()
        prefix = prefix + [m.group(1)]
        i = m.end()
        sep = re.compile(r"\s*::").match(text, i)
        if not sep:
            return [prefix], i
        i = sep.end()


def unit_of(segments, mods):
    """The unit a path (segments after `crate::`) names, or None."""
    if not segments:
        return None
    if len(segments) > 1 and f"{segments[0]}::{segments[1]}" in mods:
        return f"{segments[0]}::{segments[1]}"
    return segments[0] if segments[0] in mods else None


def edges(root, mods):
    layers = layers_of(root)
    out = {m: set() for m in mods}
    for m, files in mods.items():
        folder = m.split("::")[0] if m.split("::")[0] in layers else None
        children = {u.split("::")[1] for u in mods if folder and u.startswith(folder + "::")}
        for f in files:
            with open(f, encoding="utf-8") as handle:
                text = re.sub(r"//[^\n]*", "", handle.read())
            named = set()
            for hit in re.finditer(r"\bcrate::", text):
                paths, _ = use_paths(text, hit.end())
                named |= {unit_of(p, mods) for p in paths}
            if folder and "::" in m:
                named |= {f"{folder}::{c}" for c in re.findall(r"\bsuper::([a-z_0-9]+)", text)
                          if c in children}
            elif folder:
                named |= {f"{folder}::{c}" for c in re.findall(r"(?<![:\w])([a-z_0-9]+)::", text)
                          if c in children}
            out[m] |= {n for n in named if n and n != m}
    return out


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(root, graph):
    """Edges from a unit of a layer folder to a unit of a higher one."""
    rank = {name: i for i, name in enumerate(layers_of(root))}
    bad = []
    for u in sorted(graph):
        for v in sorted(graph[u]):
            lu, lv = rank.get(u.split("::")[0]), rank.get(v.split("::")[0])
            if lu is not None and lv is not None and lu < lv:
                bad.append((u, v))
    return bad


def main(roots):
    failed = False
    for root in roots:
        mods = units(root)
        graph = edges(root, mods)
        found = cycles(graph)
        for component in found:
            print(f"{root}: cycle: {' '.join(component)}")
            for m in component:
                print(f"    {m} -> {' '.join(sorted(graph[m] & set(component)))}")
        print(f"{root}: {len(found)} cycles among {len(mods)} modules")
        bad = upward(root, graph)
        for u, v in bad:
            print(f"{root}: layer: {u} -> {v} (a lower layer uses a higher one)")
        if layers_of(root):
            print(f"{root}: {len(bad)} upward references across layers {' < '.join(layers_of(root))}")
        failed |= bool(found) or bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["proxy/src"]))
