"""Move a data file to a machine that takes at most 64 MiB a transfer: split it, join it there.

    python benchmarks/stage_data.py split ../shared/data/cifar100.npz data/parts   # here
    python benchmarks/stage_data.py join data/parts data/cifar100.npz              # there

`split` writes NAME.part000, NAME.part001, ... of at most --part-mib MiB each (default 50) and
NAME.manifest.json (the file's size, md5 and the parts' md5s). `join` checks every part against the
manifest, writes the file atomically and checks its md5; it refuses a missing or damaged part
with one line. `join --parts I,J` may run before all parts arrived (the parts may come one call
at a time): it only checks the parts named, so a transfer can be verified as it goes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def split(path: str, out: str, part_mib: float = 50.0) -> list[str]:
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} is not a file")
    if not 0 < part_mib < 64:
        raise SystemExit(f"error: --part-mib={part_mib} must be in (0, 64)")
    os.makedirs(out, exist_ok=True)
    name = os.path.basename(path)
    size = int(part_mib * 2**20)
    parts, digests = [], []
    whole = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(size):
            whole.update(chunk)
            part = os.path.join(out, f"{name}.part{len(parts):03d}")
            with open(part, "wb") as g:
                g.write(chunk)
            parts.append(part)
            digests.append(md5(chunk))
    manifest = {"name": name, "size": os.path.getsize(path), "md5": whole.hexdigest(),
                "parts": [os.path.basename(p) for p in parts], "part_md5": digests}
    with open(os.path.join(out, f"{name}.manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return parts


def _manifest(folder: str) -> dict:
    found = [f for f in os.listdir(folder) if f.endswith(".manifest.json")] if os.path.isdir(folder) else []
    if len(found) != 1:
        raise SystemExit(f"error: {folder} must hold exactly one *.manifest.json (found {len(found)})")
    with open(os.path.join(folder, found[0])) as f:
        return json.load(f)


def check(folder: str, which: list[int] | None = None) -> dict:
    m = _manifest(folder)
    for i in range(len(m["parts"])) if which is None else which:
        p = os.path.join(folder, m["parts"][i])
        if not os.path.isfile(p):
            raise SystemExit(f"error: part {i} ({p}) is missing")
        with open(p, "rb") as f:
            if md5(f.read()) != m["part_md5"][i]:
                raise SystemExit(f"error: part {i} ({p}) is damaged (md5 differs from the manifest)")
    return m


def join(folder: str, path: str) -> None:
    m = check(folder)
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    whole = hashlib.md5()
    with open(tmp, "wb") as g:
        for part in m["parts"]:
            with open(os.path.join(folder, part), "rb") as f:
                data = f.read()
            whole.update(data)
            g.write(data)
    if whole.hexdigest() != m["md5"] or os.path.getsize(tmp) != m["size"]:
        os.remove(tmp)
        raise SystemExit(f"error: the joined file does not match the manifest's md5 {m['md5']}")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("file")
    s.add_argument("out")
    s.add_argument("--part-mib", type=float, default=50.0)
    j = sub.add_parser("join")
    j.add_argument("folder")
    j.add_argument("file", nargs="?")
    j.add_argument("--parts", help="only check these part numbers (comma separated), write nothing")
    a = p.parse_args(argv)
    if a.cmd == "split":
        parts = split(a.file, a.out, a.part_mib)
        print(f"{len(parts)} parts in {a.out}")
    elif a.parts:
        check(a.folder, [int(i) for i in a.parts.split(",")])
        print(f"parts {a.parts} ok")
    else:
        if not a.file:
            raise SystemExit("error: join needs the output file (or --parts to check parts only)")
        join(a.folder, a.file)
        print(f"joined {a.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
