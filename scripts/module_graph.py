#!/usr/bin/env python3
"""Checks the shape of strata's source tree (docs/design.md, "Module map").

    scripts/module_graph.py            # check; exit 1 naming what is wrong
    scripts/module_graph.py --graph    # also print every file's imports

What it checks, on the code outside `#[cfg(test)]` modules:
  * no import cycle among files of src/ longer than two files (a parent
    and its children may each name the other; three files in a ring may
    not);
  * nothing in the library imports commands/ or cli/ (they are the CLI's
    top, never the library; only main.rs, lib.rs and each other may);
  * storage/ imports nothing of strata but error and util;
  * no file has more than MAX_LINES lines of non-test code, main.rs no
    more than MAX_MAIN;
  * every file opens with a `//!` line saying what it is for.

Imports are read from `use` trees and from paths written inline
(`crate::a::b`, `super::x`, `self::y`, a child module's name); a name a
module re-exports (`pub use child::Thing`) is followed to the file that
defines it. Python 3 standard library only: it runs before anything is
built.
"""
import os
import re
import sys

MAX_LINES = 800
MAX_MAIN = 150
CLI_SIDE = ("main", "lib", "cli", "commands")
STORAGE_MAY_IMPORT = {"error", "util", "crashpoint", ""}

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(rel):
    """src-relative path -> module path tuple ('' crate root = ())."""
    if rel in ("lib.rs", "main.rs"):
        return ()
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_code(text):
    """Removes comments, string and char literals (keeping line breaks)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # a char literal ('a', '\n', '\u{1F600}') or a lifetime ('a)
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """Blanks `#[cfg(test)] mod x { ... }` blocks (keeping line breaks)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
        if m.start() < i:
            continue
        out.append(code[i:m.start()])
        depth, j = 1, m.end()
        while j < len(code) and depth:
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
            j += 1
        out.append("\n" * code.count("\n", m.start(), j))
        i = j
    out.append(code[i:])
    return "".join(out)


def expand_use(tree):
    """'a::{b, c::{d, e as f}, g::*}' -> [['a','b'], ['a','c','d'], ['a','c','e'], ['a','g']]."""
    tree = re.sub(r"\s+", " ", tree).strip()

    def split_top(inner):
        items, depth, cur = [], 0, ""
        for ch in inner:
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        items.append(cur)
        return [i.strip() for i in items if i.strip()]

    def parse(s):
        brace = s.find("{")
        if brace < 0:
            s = re.sub(r" as \w+$", "", s)
            return [[p.strip() for p in s.split("::") if p.strip() not in ("", "*", "self")]]
        prefix = [p.strip() for p in s[:brace].split("::") if p.strip()]
        paths = []
        for item in split_top(s[brace + 1:s.rfind("}")]):
            for p in parse(item):
                paths.append(prefix + p)
        return paths or [prefix]

    return parse(tree)


class Tree:
    def __init__(self, root):
        self.files = {}  # module tuple -> rel path
        self.code = {}  # rel -> non-test code
        self.raw = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                text = open(os.path.join(root, rel), encoding="utf-8").read()
                self.raw[rel] = text
                self.code[rel] = drop_test_modules(strip_code(text))
                if rel != "main.rs":
                    self.files[module_of(rel)] = rel
        self.reexports = {rel: self.pub_uses(rel) for rel in self.code}

    def children(self, module):
        return {m[-1] for m in self.files if len(m) == len(module) + 1 and m[:-1] == module}

    def uses(self, rel):
        code = re.sub(r"\s+", " ", self.code[rel])
        for m in re.finditer(r"\b(pub(\([^)]*\))? )?use ([^;]+);", code):
            for path in expand_use(m.group(3)):
                yield bool(m.group(1)), path

    def pub_uses(self, rel):
        """name -> absolute path a module re-exports under that name."""
        out = {}
        module = module_of(rel)
        for is_pub, path in self.uses(rel):
            if not is_pub or not path:
                continue
            absolute = self.absolute(module, path, rel)
            if absolute is None:
                continue
            out[path[-1]] = absolute
        return out

    def absolute(self, module, path, rel):
        """Resolves a written path to an absolute path tuple, or None."""
        if rel == "main.rs":
            if path[0] == "strata":
                return tuple(path[1:])
            return None
        head = path[0]
        if head == "crate":
            return tuple(path[1:])
        if head in ("super", "self"):
            base = list(module)
            i = 0
            while i < len(path) and path[i] in ("super", "self"):
                if path[i] == "super":
                    base = base[:-1]
                i += 1
            return tuple(base) + tuple(path[i:])
        if head in self.children(module):
            return module + tuple(path)
        if module == () and (head,) in self.files:
            return tuple(path)
        return None  # an external crate or std

    def resolve(self, absolute, depth=0):
        """Absolute path -> the file defining it (following re-exports)."""
        for cut in range(len(absolute), -1, -1):
            mod = absolute[:cut]
            if mod in self.files:
                rel = self.files[mod]
                rest = absolute[cut:]
                if rest and depth < 8 and rest[0] in self.reexports.get(rel, {}):
                    target = self.reexports[rel][rest[0]] + rest[1:]
                    if target != absolute:
                        return self.resolve(target, depth + 1)
                return rel
        return None

    def imports(self, rel):
        module = () if rel == "main.rs" else module_of(rel)
        deps = set()
        paths = [p for _, p in self.uses(rel)]
        code = self.code[rel]
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self|strata|\w+)(?:::\w+)+)", code):
            paths.append(m.group(1).split("::"))
        for path in paths:
            if not path:
                continue
            absolute = self.absolute(module, path, rel)
            if absolute is None:
                continue
            target = self.resolve(absolute)
            if target and target != rel:
                deps.add(target)
        return deps


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def has_long_cycle(comp, graph):
    """Whether a strongly connected set of files holds a cycle of three or
    more files. It does not exactly when every import in it is returned
    (a pair that name each other) and those pairs form a tree: a parent
    module and children that each use it, say. An import not returned
    closes a ring with the way back; pairs forming a loop are a ring."""
    members = set(comp)
    edges = {(a, b) for a in comp for b in graph[a] if b in members}
    if any((b, a) not in edges for a, b in edges):
        return True
    pairs = {tuple(sorted(e)) for e in edges}
    return len(pairs) != len(comp) - 1


def main():
    tree = Tree(ROOT)
    graph = {rel: tree.imports(rel) for rel in sorted(tree.code)}
    problems = []

    if "--graph" in sys.argv:
        for rel, deps in graph.items():
            print(f"{rel}: {' '.join(sorted(deps))}")

    for comp in sccs(graph):
        if len(comp) > 2 and has_long_cycle(comp, graph):
            ring = ", ".join(comp)
            edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
            problems.append(f"import cycle of {len(comp)} files: {ring}\n      " + "\n      ".join(edges))

    for rel, deps in graph.items():
        top = rel.split("/")[0].removesuffix(".rs")
        if top not in CLI_SIDE:
            for d in sorted(deps):
                if d.split("/")[0] in ("commands", "cli"):
                    problems.append(f"{rel} imports {d} (the library must not reach into commands/ or cli/)")
        if top == "storage":
            for d in sorted(deps):
                dtop = d.split("/")[0].removesuffix(".rs")
                if dtop != "storage" and dtop not in STORAGE_MAY_IMPORT:
                    problems.append(f"{rel} imports {d} (storage/ is the bottom layer)")

    for rel, text in sorted(tree.raw.items()):
        # lines of the file before and between test modules, comments included
        non_test = len(drop_test_modules(strip_code(text)).rstrip("\n").split("\n"))
        limit = MAX_MAIN if rel == "main.rs" else MAX_LINES
        if non_test > limit:
            problems.append(f"{rel} has {non_test} lines of non-test code (at most {limit})")
        if not text.lstrip("\ufeff").startswith("//!"):
            problems.append(f"{rel} does not open with a //! line saying what it is for")

    if problems:
        print("module_graph: the source tree's shape is off (docs/design.md, \"Module map\"):")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"module_graph: {len(graph)} files, no cycle over two files, layers and sizes as documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
