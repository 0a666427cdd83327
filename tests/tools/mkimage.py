#!/usr/bin/env python3
"""Write a deterministic OCI image layout for tests, with no downloads.

    mkimage.py OUTDIR --seed S --layers N --layer-size BYTES
               [--platforms linux/amd64,linux/arm64] [--docker] [--tag TAG]

Same arguments -> byte-identical blobs and digests, so tests can compare
what a registry (or regcache) serves against what was generated.

Each layer is a gzip'd tar holding LAYER-SIZE bytes of seeded random data
(random, so gzip cannot shrink it and blob sizes stay close to LAYER-SIZE).
Every platform gets its own layers.  The config's rootfs.diff_ids are the
sha256 of the uncompressed tars.  With several platforms the top level is an
image index (OCI) or manifest list (--docker) with one manifest per platform.

--docker uses Docker schema2 media types throughout.  The layout's index.json
references the top-level manifest/index with ref.name TAG (default latest),
so `skopeo copy --all --preserve-digests oci:OUTDIR docker://...` pushes it
unchanged (skopeo keeps the source manifest type when the destination
accepts it; --preserve-digests makes it fail instead of converting).

Prints the top-level manifest/index digest on stdout.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

OCI = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "index": "application/vnd.oci.image.index.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
DOCKER = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "index": "application/vnd.docker.distribution.manifest.list.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
FILE_CHUNK = 1 << 20  # split layer content into files of at most 1 MiB


def canonical(obj):
    """Stable JSON bytes: the digest must not depend on dict order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    def __init__(self, outdir):
        self.blobdir = os.path.join(outdir, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)

    def put(self, data, media_type):
        """Store a blob; return its descriptor."""
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobdir, hexd), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + hexd, "size": len(data)}


def make_layer(rng, size, index):
    """Return (tar bytes) of `size` random bytes split over several files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        remaining, n = size, 0
        while True:
            chunk = min(remaining, FILE_CHUNK)
            info = tarfile.TarInfo("layer%d/file%04d.bin" % (index, n))
            info.size, info.mtime, info.mode = chunk, 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(rng.randbytes(chunk)))
            remaining -= chunk
            n += 1
            if remaining <= 0:
                break
    return buf.getvalue()


def gzip_bytes(data):
    # mtime=0 and no file name in the header keep the output deterministic.
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def parse_platform(text):
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        sys.exit("mkimage: bad platform %r (want os/arch[/variant])" % text)
    plat = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        plat["variant"] = parts[2]
    return plat


def make_image(layout, types, seed, platform, nlayers, layer_size):
    """Write layers, config and manifest for one platform; return descriptor."""
    pname = "/".join(platform[k] for k in ("os", "architecture", "variant") if k in platform)
    layers, diff_ids, history = [], [], []
    for i in range(nlayers):
        # Seed per (seed, platform, layer) so platforms have distinct layers.
        rng = random.Random("%s/%s/%d" % (seed, pname, i))
        tar = make_layer(rng, layer_size, i)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        layers.append(layout.put(gzip_bytes(tar), types["layer"]))
        history.append({"created": "1970-01-01T00:00:00Z", "created_by": "mkimage layer %d" % i})
    config = {
        "architecture": platform["architecture"],
        "os": platform["os"],
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"org.regcache.test.seed": str(seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if "variant" in platform:
        config["variant"] = platform["variant"]
    manifest = {
        "schemaVersion": 2,
        "mediaType": types["manifest"],
        "config": layout.put(canonical(config), types["config"]),
        "layers": layers,
    }
    desc = layout.put(canonical(manifest), types["manifest"])
    desc["platform"] = platform
    return desc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", required=True)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--layer-size", type=int, default=1024)
    ap.add_argument("--platforms", default="linux/amd64")
    ap.add_argument("--docker", action="store_true", help="Docker schema2 media types")
    ap.add_argument("--tag", default="latest")
    args = ap.parse_args()
    if args.layers < 1 or args.layer_size < 1:
        sys.exit("mkimage: --layers and --layer-size must be >= 1")
    if os.path.exists(args.outdir) and os.listdir(args.outdir):
        sys.exit("mkimage: %s exists and is not empty" % args.outdir)

    types = DOCKER if args.docker else OCI
    layout = Layout(args.outdir)
    platforms = [parse_platform(p) for p in args.platforms.split(",")]
    descs = [make_image(layout, types, args.seed, p, args.layers, args.layer_size)
             for p in platforms]

    if len(descs) == 1:
        top = descs[0]
    else:
        index = {"schemaVersion": 2, "mediaType": types["index"], "manifests": descs}
        top = layout.put(canonical(index), types["index"])
    top = dict(top, annotations={"org.opencontainers.image.ref.name": args.tag})

    with open(os.path.join(args.outdir, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(args.outdir, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": OCI["index"], "manifests": [top]}))
    print(top["digest"])


if __name__ == "__main__":
    main()
