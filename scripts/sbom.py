#!/usr/bin/env python3
"""Writes a CycloneDX 1.5 SBOM (JSON) of the herald binary.

Usage: scripts/sbom.py TARGET_TRIPLE SOURCE_DATE_EPOCH > herald.cdx.json

Reads the dependency graph from `cargo metadata --locked` for the one target
platform the binary is built for, and lists every package reachable from herald
through normal dependencies (what is compiled into the binary; build scripts
and proc macros run only while building, so they and what only they use are
left out): name, version,
package URL, licence expression, the SHA-256 of the crate from Cargo.lock, and
who depends on whom. The output depends only on the lock file, the target and
the time given, so two runs from one commit write the same bytes.

Python 3.11 standard library only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def metadata(target: str) -> dict:
    output = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output)


def lock_checksums() -> dict[tuple[str, str], str]:
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    return {
        (package["name"], package["version"]): package["checksum"]
        for package in lock.get("package", [])
        if "checksum" in package
    }


def is_proc_macro(package: dict) -> bool:
    return any("proc-macro" in target["kind"] for target in package["targets"])


def purl(package: dict) -> str:
    return f"pkg:cargo/{package['name']}@{package['version']}"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    target, epoch = sys.argv[1], int(sys.argv[2])
    meta = metadata(target)
    packages = {package["id"]: package for package in meta["packages"]}
    nodes = {node["id"]: node for node in meta["resolve"]["nodes"]}
    root_id = meta["resolve"]["root"] or next(
        package["id"] for package in meta["packages"] if package["name"] == "herald"
    )

    # Normal dependencies only, from herald down.
    edges: dict[str, list[str]] = {}
    seen = {root_id}
    queue = [root_id]
    while queue:
        current = queue.pop()
        deps = []
        for dep in nodes[current]["deps"]:
            kinds = {kind["kind"] for kind in dep["dep_kinds"]}
            if None not in kinds or is_proc_macro(packages[dep["pkg"]]):
                continue
            deps.append(dep["pkg"])
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                queue.append(dep["pkg"])
        edges[current] = sorted(set(deps), key=lambda pid: purl(packages[pid]))

    checksums = lock_checksums()
    root = packages[root_id]
    components = []
    for package_id in sorted(seen - {root_id}, key=lambda pid: purl(packages[pid])):
        package = packages[package_id]
        component = {
            "type": "library",
            "bom-ref": purl(package),
            "name": package["name"],
            "version": package["version"],
            "purl": purl(package),
            "scope": "required",
        }
        if package.get("description"):
            component["description"] = " ".join(package["description"].split())
        if package.get("license"):
            component["licenses"] = [{"expression": package["license"]}]
        checksum = checksums.get((package["name"], package["version"]))
        if checksum:
            component["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        if package.get("repository"):
            component["externalReferences"] = [{"type": "vcs", "url": package["repository"]}]
        components.append(component)

    # A serial number that is the same for the same contents.
    serial = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([purl(root), target, components], sort_keys=True))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "herald scripts/sbom.py"}]},
            "component": {
                "type": "application",
                "bom-ref": purl(root),
                "name": root["name"],
                "version": root["version"],
                "purl": purl(root),
                "licenses": [{"expression": root["license"]}] if root.get("license") else [],
                "properties": [{"name": "cdx:rust:target", "value": target}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": purl(packages[package_id]), "dependsOn": [purl(packages[dep]) for dep in deps]}
            for package_id, deps in sorted(edges.items(), key=lambda item: purl(packages[item[0]]))
        ],
    }
    json.dump(bom, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
