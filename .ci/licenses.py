#!/usr/bin/env python3
"""Checks the licences of the crates the herald binary is built from.

Reads the dependency graph from `cargo metadata --format-version 1 --locked`
(no other network access; cargo only fetches crates it does not have yet) and
checks every package reachable from herald through normal and build
dependencies, on every target platform, against the allowlist in
.ci/licenses.toml (which says why each licence is there). Dev dependencies are
not shipped and are not checked.

A package's SPDX `license` expression passes when the allowed licences can meet
it: either side of an OR (or the legacy `/`), every part of an AND, and for
`X WITH exception` that exact pair. A package without a `license` (only a
`license-file`) passes only when listed in the `[license_file]` table with the
licence it grants.

Exit status: 0 when every package passes, 1 otherwise (each failure named on
standard error), 2 when cargo or the allowlist cannot be read.

Python 3.11 standard library only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".ci" / "licenses.toml"

# An expression tree: a licence id (str), ("WITH", id, exception),
# ("AND", [trees]) or ("OR", [trees]).
Tree = str | tuple


class ExpressionError(ValueError):
    """A licence expression that is not SPDX."""


def tokenize(expression: str) -> list[str]:
    """Splits on spaces, parentheses and the legacy `/` (meaning OR)."""
    tokens = re.findall(r"\(|\)|/|[^\s()/]+", expression)
    return ["OR" if t == "/" else (t.upper() if t.upper() in ("OR", "AND", "WITH") else t) for t in tokens]


def parse(expression: str) -> Tree:
    """Parses an SPDX expression (WITH binds tighter than AND, AND than OR)."""
    tokens = tokenize(expression)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ExpressionError(f"{expression!r} ends too early")
        pos += 1
        return tokens[pos - 1]

    def license_id() -> str:
        token = take()
        if token in ("(", ")", "OR", "AND", "WITH"):
            raise ExpressionError(f"{expression!r}: expected a licence, found {token!r}")
        return token

    def term() -> Tree:
        if peek() == "(":
            take()
            inner = either()
            if take() != ")":
                raise ExpressionError(f"{expression!r}: unbalanced parentheses")
            return inner
        name = license_id()
        if peek() == "WITH":
            take()
            return ("WITH", name, license_id())
        return name

    def both() -> Tree:
        parts = [term()]
        while peek() == "AND":
            take()
            parts.append(term())
        return parts[0] if len(parts) == 1 else ("AND", parts)

    def either() -> Tree:
        parts = [both()]
        while peek() == "OR":
            take()
            parts.append(both())
        return parts[0] if len(parts) == 1 else ("OR", parts)

    if not tokens:
        raise ExpressionError("empty licence expression")
    tree = either()
    if pos != len(tokens):
        raise ExpressionError(f"{expression!r}: unexpected {tokens[pos]!r}")
    return tree


def permitted(tree: Tree, allowed: set[str]) -> bool:
    """Whether the allowed licences meet the expression."""
    if isinstance(tree, str):
        return tree in allowed
    if tree[0] == "WITH":
        return f"{tree[1]} WITH {tree[2]}" in allowed
    if tree[0] == "AND":
        return all(permitted(part, allowed) for part in tree[1])
    return any(permitted(part, allowed) for part in tree[1])


def names(tree: Tree) -> list[str]:
    """The licences an expression names, in order."""
    if isinstance(tree, str):
        return [tree]
    if tree[0] == "WITH":
        return [f"{tree[1]} WITH {tree[2]}"]
    return [name for part in tree[1] for name in names(part)]


def shipped(metadata: dict) -> list[dict]:
    """The root package and every package reachable through normal and build
    dependencies (on any platform), sorted by name and version."""
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = metadata["resolve"]["root"]
    if root is None:
        raise SystemExit("licenses: cargo metadata names no root package")
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes[node]["deps"]:
            if any(kind["kind"] != "dev" for kind in dep["dep_kinds"]):
                todo.append(dep["pkg"])
    return sorted((packages[i] for i in seen), key=lambda p: (p["name"], p["version"]))


def check(packages: list[dict], allowed: set[str], license_file: dict[str, str]) -> list[str]:
    """The problems found, one line each."""
    problems = []
    for package in packages:
        crate = f"{package['name']} {package['version']}"
        expression = package.get("license")
        if not expression:
            if package["name"] not in license_file:
                problems.append(
                    f"{crate}: no SPDX licence (license-file: {package.get('license_file')}); "
                    f"read it and list it under [license_file] in .ci/licenses.toml with the licence it grants"
                )
            continue
        try:
            tree = parse(expression)
        except ExpressionError as err:
            problems.append(f"{crate}: cannot read its licence: {err}")
            continue
        if not permitted(tree, allowed):
            missing = [name for name in names(tree) if name not in allowed]
            problems.append(
                f"{crate}: licence {expression!r} is not allowed "
                f"(not in .ci/licenses.toml: {', '.join(dict.fromkeys(missing))})"
            )
    return problems


def main() -> int:
    try:
        allowlist = tomllib.loads(ALLOWLIST.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        print(f"licenses: cannot read {ALLOWLIST}: {err}", file=sys.stderr)
        return 2
    allowed = set(allowlist.get("allow", []))
    license_file = dict(allowlist.get("license_file", {}))
    result = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(f"licenses: cargo metadata failed:\n{result.stderr}", file=sys.stderr)
        return 2
    packages = shipped(json.loads(result.stdout))
    problems = check(packages, allowed, license_file)
    present = {p["name"] for p in packages}
    for name in sorted(set(license_file) - present):
        print(f"licenses: note: [license_file] lists {name}, which is no longer a dependency", file=sys.stderr)
    if problems:
        for problem in problems:
            print(f"licenses: {problem}", file=sys.stderr)
        print(f"licenses: {len(problems)} of {len(packages)} packages fail the licence allowlist", file=sys.stderr)
        return 1
    for name in sorted(allowed):
        if not check(packages, allowed - {name}, license_file):
            print(f"licenses: note: no package needs {name!r}; remove it from the allowlist", file=sys.stderr)
    print(f"licenses: all {len(packages)} packages of the herald binary have allowed licences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
