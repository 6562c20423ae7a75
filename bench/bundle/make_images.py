#!/usr/bin/env python3
"""Writes the bundle benchmark's test images into an OCI layout.

    make_images.py LAYOUT IMAGES PLATFORMS LAYERS LAYER_BYTES

IMAGES images, tagged img0 ... imgN-1 in LAYOUT/index.json. Each is an OCI image index of
PLATFORMS platforms (linux/amd64, linux/arm64, ...); each platform's manifest has its own
config and LAYERS layers of LAYER_BYTES random bytes, so nothing is shared between images
or platforms and nothing compresses. Prints the total bytes of every blob and manifest (what
a copy of all images moves), then one line per image tag.
"""

import hashlib
import json
import os
import sys

ARCHES = ["amd64", "arm64", "ppc64le", "s390x", "riscv64", "386", "arm", "mips64le"]
CHUNK = 1 << 20


def main():
    layout, images, platforms, layers, layer_bytes = sys.argv[1:]
    images, platforms, layers, layer_bytes = map(int, (images, platforms, layers, layer_bytes))
    if not 1 <= platforms <= len(ARCHES):
        sys.exit(f"PLATFORMS must be 1..{len(ARCHES)}")
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    total = 0

    def put(data, media):
        nonlocal total
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, hexd), "wb") as f:
            f.write(data)
        total += len(data)
        return {"mediaType": media, "digest": "sha256:" + hexd, "size": len(data)}

    def random_layer():
        nonlocal total
        tmp = os.path.join(blobs, "layer.tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as f:
            left = layer_bytes
            while left:
                chunk = os.urandom(min(CHUNK, left))
                digest.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        hexd = digest.hexdigest()
        os.rename(tmp, os.path.join(blobs, hexd))
        total += layer_bytes
        return hexd

    tags = []
    for i in range(images):
        children = []
        for arch in ARCHES[:platforms]:
            hexes = [random_layer() for _ in range(layers)]
            config = json.dumps({
                "architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h for h in hexes]},
            }).encode()
            manifest = json.dumps({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": put(config, "application/vnd.oci.image.config.v1+json"),
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": "sha256:" + h, "size": layer_bytes} for h in hexes],
            }).encode()
            child = put(manifest, "application/vnd.oci.image.manifest.v1+json")
            child["platform"] = {"os": "linux", "architecture": arch}
            children.append(child)
        index = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }).encode()
        desc = put(index, "application/vnd.oci.image.index.v1+json")
        tag = f"img{i}"
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        tags.append(desc)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": tags}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(total)
    for desc in tags:
        print(desc["annotations"]["org.opencontainers.image.ref.name"])


if __name__ == "__main__":
    main()
