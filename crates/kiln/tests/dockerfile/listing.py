#!/usr/bin/env python3
"""Reduce an image from `docker save` to what the Dockerfile tests compare: the files that
differ from the base image (type, mode, owner, size, content digest or link target; not
times), the paths it deleted, and the execution fields of its config.

usage: listing.py SAVED.tar IMAGE-TAG BASE-TAG > expected.json
       docker image inspect IMAGE | listing.py --inspect > expected.json
The same reduction is implemented in Rust by tests/dockerfile.rs."""
import hashlib, json, posixpath, sys, tarfile

CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
                 "Volumes", "StopSignal", "Healthcheck", "Shell", "OnBuild"]

def norm(p):
    parts = []
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
            continue
        parts.append(c)
    return "/".join(parts)

def remove_tree(fs, path):
    for k in [k for k in fs if k == path or k.startswith(path + "/")]:
        del fs[k]

def flatten(outer, layers):
    fs = {}
    for name in layers:
        members = []
        with tarfile.open(fileobj=outer.extractfile(name)) as t:
            for m in t.getmembers():
                data = t.extractfile(m).read() if m.isfile() else b""
                members.append((m, data))
        # Whiteouts apply to the layers below, before this layer's own entries.
        for m, _ in members:
            p = norm(m.name)
            d, b = posixpath.split(p)
            if b == ".wh..wh..opq":
                for k in [k for k in fs if k.startswith(d + "/") if d] or ([k for k in fs] if not d else []):
                    del fs[k]
            elif b.startswith(".wh."):
                remove_tree(fs, posixpath.join(d, b[4:]))
        for m, data in members:
            p = norm(m.name)
            if not p or posixpath.basename(p).startswith(".wh."):
                continue
            if m.isdir():
                kind, size, h = "d", 0, "-"
            elif m.issym():
                kind, size, h = "l", 0, m.linkname
            elif m.islnk():
                target = fs.get(norm(m.linkname))
                kind, size, h = ("f", target[4], target[5]) if target else ("f", 0, "?")
            elif m.isfile():
                kind, size, h = "f", len(data), hashlib.sha256(data).hexdigest()
            elif m.ischr():
                kind, size, h = "c", 0, f"{m.devmajor},{m.devminor}"
            elif m.isblk():
                kind, size, h = "b", 0, f"{m.devmajor},{m.devminor}"
            elif m.isfifo():
                kind, size, h = "p", 0, "-"
            else:
                continue
            if kind != "d":
                remove_tree(fs, p)
            fs[p] = (kind, m.mode & 0o7777, m.uid, m.gid, size, h)
    return fs

def reduce(path, image, base):
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        def find(tag):
            for m in manifest:
                if tag in (m.get("RepoTags") or []):
                    return m
            sys.exit(f"{tag} not in {path}")
        img, b = find(image), find(base)
        cfg = json.load(outer.extractfile(img["Config"]))
        base_cfg = json.load(outer.extractfile(b["Config"]))
        ids, base_ids = cfg["rootfs"]["diff_ids"], base_cfg["rootfs"]["diff_ids"]
        base_fs = flatten(outer, b["Layers"]) if ids[:len(base_ids)] == base_ids else {}
        fs = flatten(outer, img["Layers"])
    lines = []
    for p in sorted(set(fs) | set(base_fs)):
        now, before = fs.get(p), base_fs.get(p)
        if now is None:
            lines.append(f"{p}\tdeleted")
        elif before is None or (now if now[0] != "d" else now[:4]) != (before if before[0] != "d" else before[:4]):
            lines.append("\t".join([p, now[0], f"{now[1]:04o}", str(now[2]), str(now[3]), str(now[4]), now[5]]))
    return {"files": lines, "config": config_fields(cfg.get("config") or {})}

def config_fields(c):
    # An empty value is the same as none; WorkingDir "/" is the default (BuildKit 0.8 writes it).
    return {k: c[k] for k in CONFIG_FIELDS if c.get(k) not in (None, [], {}, "") and not (k == "WorkingDir" and c[k] == "/")}

def from_inspect(inspect):
    return {"files": [], "config": config_fields(inspect[0].get("Config") or {})}

if __name__ == "__main__":
    if sys.argv[1:] == ["--inspect"]:
        out = from_inspect(json.load(sys.stdin))
    else:
        out = reduce(*sys.argv[1:4])
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
