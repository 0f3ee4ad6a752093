#!/usr/bin/env python3
"""Checks include/uapi/dm_switch.yaml, the YNL spec of the DM_SWITCH family,
on the host: it passes the kernel tree's genetlink-legacy schema, the tree's
own spec library loads it, and its names and numbers are those of
pure/abi.rs (the one Rust definition of the ABI).

Usage: tests/host/ynl_spec.py KERNEL_SOURCE_TREE   (exit 0: the spec is good)
"""
import re
import sys
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "include" / "uapi" / "dm_switch.yaml"


def abi_consts():
    """`pub const NAME: T = VALUE;` of pure/abi.rs (literals only)."""
    text = (REPO / "pure" / "abi.rs").read_text()
    out = {}
    for name, value in re.findall(r"^pub const (\w+): [\w&' ]+ = (\"[^\"]*\"|\d+);", text, re.M):
        out[name] = value.strip('"') if value.startswith('"') else int(value)
    return out


def main(ksrc):
    ksrc = Path(ksrc)
    schema_path = ksrc / "Documentation" / "netlink" / "genetlink-legacy.yaml"
    spec = yaml.safe_load(SPEC.read_text())
    jsonschema.validate(spec, yaml.safe_load(schema_path.read_text()))
    sys.path.insert(0, str(ksrc / "tools" / "net" / "ynl"))
    from lib import SpecFamily  # the kernel tree's own spec library
    family = SpecFamily(str(SPEC), str(schema_path))
    abi = abi_consts()
    attrs = {name: a.value for name, a in family.attr_sets["dm-switch"].items()}
    ops = {name: op.value for name, op in family.ops.items()}
    want = {
        "name": (family.name, abi["FAMILY_NAME"]),
        "version": (spec["version"], abi["FAMILY_VERSION"]),
        "get-page-tbl": (ops["get-page-tbl"], abi["CMD_GET_PAGE_TBL"]),
        "dump-page-tbl": (ops["dump-page-tbl"], abi["CMD_DUMP_PAGE_TBL"]),
        "msg": (attrs["msg"], abi["ATTR_MSG"]),
        "dev-major": (attrs["dev-major"], abi["ATTR_DEV_MAJOR"]),
        "dev-minor": (attrs["dev-minor"], abi["ATTR_DEV_MINOR"]),
        "response": (attrs["response"], abi["ATTR_RESPONSE"]),
        "dump-path-stats": (ops["dump-path-stats"], abi["CMD_DUMP_PATH_STATS"]),
        "path-stats": (attrs["path-stats"], abi["ATTR_PATH_STATS"]),
    }
    bad = {k: v for k, v in want.items() if v[0] != v[1]}
    assert not bad, f"the YNL spec disagrees with pure/abi.rs (spec, abi): {bad}"
    assert set(attrs) == {"msg", "dev-major", "dev-minor", "path-stats", "response"}, attrs
    assert set(ops) == {"get-page-tbl", "dump-page-tbl", "dump-path-stats"}, ops
    print(f"ynl spec: {SPEC.relative_to(REPO)} passes the schema; {len(want)} names and numbers match pure/abi.rs")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
