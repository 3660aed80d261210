#!/usr/bin/env python3
"""Rewrites every gzip layer of an OCI layout's images, in place: decompressed (zcat), then
through a compressing command (stdin -> stdout) if one is given, else left uncompressed. New
layer blobs, manifests and index entries; configs (diff_ids) stay. benches/producers.sh makes
its Go compress/gzip and uncompressed copies of the corpus with it.
Usage: recompress.py LAYOUT [CMD [ARG...]]"""
import hashlib, json, os, shlex, subprocess, sys

layout, cmd = sys.argv[1], sys.argv[2:]
blobs = os.path.join(layout, "blobs", "sha256")

def read(d):
    with open(os.path.join(blobs, d.split(":", 1)[1]), "rb") as f:
        return f.read()

def put(data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd, len(data)

done = {}
def layer(desc):
    mt = desc["mediaType"]
    if not mt.endswith(".tar+gzip"):
        raise SystemExit(f"{desc['digest']}: {mt} is not a gzip layer")
    if desc["digest"] not in done:
        src = os.path.join(blobs, desc["digest"].split(":", 1)[1])
        pipe = f"zcat {shlex.quote(src)}" + (" | " + shlex.join(cmd) if cmd else "")
        out = subprocess.run(["bash", "-o", "pipefail", "-c", pipe], stdout=subprocess.PIPE, check=True).stdout
        done[desc["digest"]] = put(out)
    d, n = done[desc["digest"]]
    return dict(desc, mediaType=mt if cmd else mt[: -len("+gzip")], digest=d, size=n)

def manifest(desc):
    m = json.loads(read(desc["digest"]))
    if "manifests" in m:
        m["manifests"] = [manifest(x) for x in m["manifests"]]
    else:
        m["layers"] = [layer(x) for x in m["layers"]]
    d, n = put(json.dumps(m, separators=(",", ":")).encode())
    return dict(desc, digest=d, size=n)

idx_path = os.path.join(layout, "index.json")
with open(idx_path) as f:
    idx = json.load(f)
idx["manifests"] = [manifest(x) for x in idx["manifests"]]
with open(idx_path, "w") as f:
    json.dump(idx, f)
