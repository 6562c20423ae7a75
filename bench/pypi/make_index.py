#!/usr/bin/env python3
"""Generate the benchmark's upstream: a static PEP 503 (HTML) + PEP 691 (JSON) simple index.

    make_index.py OUT_DIR BASE_URL

writes OUT_DIR/simple/index.{html,json}, OUT_DIR/simple/<project>/index.{html,json} and
OUT_DIR/packages/<project>/<wheel> (+ <wheel>.metadata, PEP 658), with file URLs absolute
under BASE_URL (as PyPI's pages point at another host). A web server picks index.json or
index.html by the request's Accept header.

The set: 30 projects in a dependency tree (bench-app needs 5, each of those needs 4 or 5
more), so `pip download bench-app` resolves and fetches exactly 30 wheels of the newest
version. Their sizes are spread log-uniformly from 20 KiB to 8 MiB (about 40 MiB in all),
mostly random bytes (incompressible, as compiled code and data files are). Each project
also lists three older, small releases, so its pages look like a real project's and the
resolver has versions to choose from. Wheels are valid: dist-info with METADATA, WHEEL and
a RECORD of sha256 hashes. Everything is deterministic (seeded), so reruns are comparable.
Prints the newest wheels as "name size sha256" lines.
"""

import base64
import hashlib
import io
import json
import os
import random
import sys
import zipfile
from html import escape

N = 30
MIN_SIZE, MAX_SIZE = 20 << 10, 8 << 20
OLD_VERSIONS = ["0.9.0", "1.0.0", "1.0.1"]
NEW_VERSION = "1.1.0"
UPLOAD_TIME = "2024-05-01T12:00:00.000000Z"


def names():
    out = ["bench-app"]
    out += [f"bench-lib{i:02d}" for i in range(1, N)]
    return out


def tree(projects):
    """bench-app -> 5 libs; lib k (1..5) -> the next 4 or 5 libs in turn."""
    deps = {p: [] for p in projects}
    deps[projects[0]] = projects[1:6]
    rest = projects[6:]
    for take, parent in zip([5, 5, 5, 5, 4], projects[1:6]):
        deps[parent], rest = rest[:take], rest[take:]
    assert not rest, rest
    return deps


def dist_name(project):
    return project.replace("-", "_")


def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel(project, version, size, requires, rng):
    """A pure-python wheel of roughly `size` bytes; returns (bytes, METADATA bytes)."""
    dist = dist_name(project)
    info = f"{dist}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {project}\n"
        f"Version: {version}\n"
        "Summary: synthetic package for the airlock PyPI benchmark\n"
        "Requires-Python: >=3.8\n"
        + "".join(f"Requires-Dist: {r}>=1.0\n" for r in requires)
        + "\n"
    ).encode()
    files = {
        f"{dist}/__init__.py": f'"""{project} {version}"""\n__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: airlock-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    # Some readable source (compresses) and a data blob (does not) make up the size.
    source = "".join(f"def f{i}(x):\n    return x * {i} + {rng.randrange(1 << 30)}\n" for i in range(200)).encode()
    files[f"{dist}/core.py"] = source
    blob = max(0, size - len(source) // 4 - 1500)
    files[f"{dist}/_data.bin"] = rng.randbytes(blob)
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            kind = zipfile.ZIP_STORED if path.endswith(".bin") else zipfile.ZIP_DEFLATED
            info_ = zipfile.ZipInfo(path, date_time=(2024, 5, 1, 12, 0, 0))
            info_.external_attr = 0o644 << 16
            z.writestr(info_, data, compress_type=kind)
    return buf.getvalue(), metadata


def main():
    out, base = sys.argv[1], sys.argv[2].rstrip("/")
    rng = random.Random(20240501)
    projects = names()
    deps = tree(projects)
    ratio = (MAX_SIZE / MIN_SIZE) ** (1 / (N - 1))
    sizes = [int(MIN_SIZE * ratio**i) for i in range(N)]
    rng.shuffle(sizes)
    simple = os.path.join(out, "simple")
    os.makedirs(simple, exist_ok=True)
    newest = []
    for project, size in zip(projects, sizes):
        pdir = os.path.join(out, "packages", project)
        os.makedirs(pdir, exist_ok=True)
        entries = []
        for version in OLD_VERSIONS + [NEW_VERSION]:
            new = version == NEW_VERSION
            data, metadata = wheel(project, version, size if new else 4 << 10, deps[project], rng)
            filename = f"{dist_name(project)}-{version}-py3-none-any.whl"
            with open(os.path.join(pdir, filename), "wb") as f:
                f.write(data)
            with open(os.path.join(pdir, filename + ".metadata"), "wb") as f:
                f.write(metadata)
            sha = hashlib.sha256(data).hexdigest()
            entries.append({
                "filename": filename,
                "url": f"{base}/packages/{project}/{filename}",
                "hashes": {"sha256": sha},
                "requires-python": ">=3.8",
                "core-metadata": {"sha256": hashlib.sha256(metadata).hexdigest()},
                "dist-info-metadata": {"sha256": hashlib.sha256(metadata).hexdigest()},
                "size": len(data),
                "upload-time": UPLOAD_TIME,
            })
            if new:
                newest.append(f"{filename} {len(data)} {sha}")
        page = {
            "meta": {"api-version": "1.1"},
            "name": project,
            "files": entries,
            "versions": OLD_VERSIONS + [NEW_VERSION],
        }
        pdir_simple = os.path.join(simple, project)
        os.makedirs(pdir_simple, exist_ok=True)
        with open(os.path.join(pdir_simple, "index.json"), "w") as f:
            json.dump(page, f)
        links = "".join(
            f'    <a href="{escape(e["url"])}#sha256={e["hashes"]["sha256"]}" '
            f'data-requires-python="{escape(e["requires-python"])}" '
            f'data-core-metadata="sha256={e["core-metadata"]["sha256"]}" '
            f'data-dist-info-metadata="sha256={e["core-metadata"]["sha256"]}">{escape(e["filename"])}</a><br/>\n'
            for e in entries
        )
        with open(os.path.join(pdir_simple, "index.html"), "w") as f:
            f.write(
                '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
                f"    <title>Links for {project}</title>\n  </head>\n  <body>\n"
                f"    <h1>Links for {project}</h1>\n{links}  </body>\n</html>\n"
            )
    with open(os.path.join(simple, "index.json"), "w") as f:
        json.dump({"meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in projects]}, f)
    with open(os.path.join(simple, "index.html"), "w") as f:
        f.write(
            '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
            "    <title>Simple index</title>\n  </head>\n  <body>\n"
            + "".join(f'    <a href="/simple/{p}/">{p}</a>\n' for p in projects)
            + "  </body>\n</html>\n"
        )
    print("\n".join(newest))


if __name__ == "__main__":
    main()
