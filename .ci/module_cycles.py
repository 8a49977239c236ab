#!/usr/bin/env python3
"""Import cycles between the top-level modules of a crate: reads every `crate::name` reference (use
lines, paths, grouped `crate::{a, b}` imports; tests included) of each module (`name.rs` or the files
of `name/`) into a graph and prints its strongly connected components of two or more modules, each
with the edges inside it. Exits 1 when there is one. Usage: .ci/module_cycles.py proxy/src [policy/src]
Not for: cycles inside one module's folder (they do not count) or a verdict on doc comments (a
`crate::x` in a comment counts as a reference: name the module without `crate::` in prose)."""
import os
import re
import sys


def modules(root):
    found = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            found[entry[:-3]] = [path]
        elif os.path.isdir(path):
            found[entry] = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                            if f.endswith(".rs")]
    return found


def edges(mods):
    single = re.compile(r"crate::([a-z_0-9]+)")
    grouped = re.compile(r"crate::\{([^}]*)\}", re.S)
    out = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            with open(f, encoding="utf-8") as handle:
                text = handle.read()
            names = set(single.findall(text))
            for group in grouped.findall(text):
                names |= set(re.findall(r"(?:^|,)\s*([a-z_0-9]+)", group))
            out[m] |= {n for n in names if n in mods and n != m}
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


def main(roots):
    failed = False
    for root in roots:
        mods = modules(root)
        graph = edges(mods)
        found = cycles(graph)
        for component in found:
            print(f"{root}: cycle: {' '.join(component)}")
            for m in component:
                print(f"    {m} -> {' '.join(sorted(graph[m] & set(component)))}")
        print(f"{root}: {len(found)} cycles among {len(mods)} modules")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["proxy/src"]))
