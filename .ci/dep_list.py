#!/usr/bin/env python3
"""Checks that a herald binary carries its dependency list.

Usage: .ci/dep_list.py BINARY [CRATE ...]

cargo-auditable puts the list in the ELF section `.dep-v0`: zlib-compressed
JSON, `{"packages": [{"name", "version", "source", ...}]}`. This reads the
section, prints how many packages it lists, and fails unless it lists herald
and every CRATE named.

Python 3.11 standard library only.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib


def section(path: str, wanted: str) -> bytes | None:
    """The contents of a section of a 64-bit little-endian ELF file."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, names_offset, _ = header(shstrndx)
    for index in range(shnum):
        name, offset, size = header(index)
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name : end].decode() == wanted:
            return data[offset : offset + size]
    return None


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    binary, crates = sys.argv[1], sys.argv[2:]
    raw = section(binary, ".dep-v0")
    if raw is None:
        print(f"{binary}: no .dep-v0 section: the dependency list is not embedded", file=sys.stderr)
        return 1
    packages = json.loads(zlib.decompress(raw))["packages"]
    names = {package["name"] for package in packages}
    missing = [name for name in ["herald", *crates] if name not in names]
    if missing:
        print(f"{binary}: the embedded list lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{binary}: embedded dependency list of {len(packages)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
