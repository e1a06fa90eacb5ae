#!/usr/bin/env python3
"""check_layout.py - the dependency rules of docs/ARCHITECTURE.md, checked on the sources.

Three rules:
1. No circle between source files of engine/ or api/. A file depends on another when it
   calls (or takes the address of) a function that the other defines, declared in a
   header it includes (directly or through other headers). A circle means
   files that call into each other.
2. engine/'s folders only reach down: a file may include headers of its own folder and of
   the folders listed for it in FLOORS.
3. No #include circle between files of engine/ or api/ (a header that includes, through
   others, a header that includes it).

Usage: check_layout.py SOURCE_ROOT. Prints every violation; exit 1 if there is one.
"""
import os
import re
import sys

# Which engine folders each folder may include (besides itself); bn_engine.h is open to all.
FLOORS = {
    "base": set(),
    "formats": {"base"},
    "tokenizer": {"base"},
    "hub": {"base", "formats"},
    "quant": {"base", "formats"},
    "model": {"base", "formats", "quant"},
    "cuda": {"base", "formats", "quant", "model"},
    "stages": {"base", "formats", "tokenizer", "hub", "quant", "model", "cuda"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
DECL = re.compile(r'\b(bn_\w+)\s*\(')
USE = re.compile(r"\b(bn_\w+)\b")
DEF = re.compile(r'^[A-Za-z_][\w \*]*?\b(bn_\w+)\s*\([^;{]*\)\s*\{', re.M)


def strip_comments(c):
    """C source without its comments (string literals are left alone)."""
    return re.sub(r'/\*.*?\*/|//[^\n]*|("(?:\\.|[^"\\])*")',
                  lambda m: m.group(1) or " ", c, flags=re.S)


def sources(root, top):
    for d, _, files in os.walk(os.path.join(root, top)):
        for f in files:
            if f.endswith((".c", ".h")):
                yield os.path.relpath(os.path.join(d, f), root)


def resolve(root, src, inc):
    """The repository path of an include written in src, or None (system or other)."""
    for base in (os.path.dirname(src), "engine", os.path.dirname(src) + "/.."):
        p = os.path.normpath(os.path.join(base, inc))
        if os.path.exists(os.path.join(root, p)):
            return p
    return None


def circles(graph):
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def main(root):
    bad = []
    files = sorted(set(sources(root, "engine")) | set(sources(root, "api")))
    text = {f: strip_comments(open(os.path.join(root, f), encoding="utf-8", errors="replace").read())
            for f in files}
    includes = {f: [r for r in (resolve(root, f, i) for i in INCLUDE.findall(text[f])) if r] for f in files}

    # rule 2: folder floors
    for f in files:
        parts = f.split("/")
        if parts[0] != "engine" or len(parts) < 3:
            continue
        own = parts[1]
        for inc in includes[f]:
            ip = inc.split("/")
            if ip[0] == "engine" and len(ip) >= 3 and ip[1] != own and ip[1] not in FLOORS.get(own, set()):
                bad.append(f"{f} includes {inc}: engine/{own}/ may not reach engine/{ip[1]}/")

    # rule 1: no circle between .c files
    defined_in = {}
    for f in files:
        if f.endswith(".c"):
            for name in DEF.findall(text[f]):
                defined_in.setdefault(name, set()).add(f)
    deps = {}
    for f in files:
        if not f.endswith(".c"):
            continue
        declared, todo, seen = set(), list(includes[f]), set()
        while todo:  # every header f sees, directly or through other headers
            h = todo.pop()
            if h in seen or not h.endswith(".h") or h not in text:
                continue
            seen.add(h)
            declared |= set(DECL.findall(text[h]))
            todo.extend(includes[h])
        d = set()
        for name in set(USE.findall(text[f])) & declared:
            d |= defined_in.get(name, set())
        d.discard(f)
        deps[f] = d
    for comp in circles(deps):
        bad.append("circle: " + " <-> ".join(comp))

    # rule 3: no #include circle between files
    for comp in circles({f: set(includes[f]) - {f} for f in files}):
        bad.append("include circle: " + " <-> ".join(comp))

    for b in bad:
        print(b)
    print(f"check_layout: {len(files)} files, {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
