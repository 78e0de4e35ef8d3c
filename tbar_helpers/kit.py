"""The cache kit: a facilitator builds the book once, exports the cache (trained models and executed
notebooks) as one tar file, and attendees import it, so their first ``make book`` trains nothing.

    tbar cache export kit.tar      # on the machine that built the book
    tbar cache import kit.tar      # on each attendee's machine, before `make book`

The kit carries a manifest with the sha256 of every file. An import checks every file against it before
writing anything, writes each file atomically with its hash sidecar (``cache.atomic_write_bytes``), and never
replaces a file the cache already holds. Members are read as bytes: nothing in a kit is executed, unpacked
outside the cache, or followed as a link.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from . import cache
from .errors import InputError

FORMAT = "tbar-cache-kit/1"
MANIFEST = "MANIFEST.json"


def _payloads(root: Path) -> list[Path]:
    """The cache's files, without hash sidecars and unfinished temp files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".sha256", ".tmp"))
                  and not p.name.startswith("."))


def export_kit(dest: str | os.PathLike, root: Path | None = None) -> dict:
    """Pack every intact file of the cache into the tar file ``dest`` (written atomically); returns the
    manifest. Files that do not match their recorded hash are left out and listed under ``skipped``."""
    root = Path(root or cache.cache_root())
    if not root.is_dir() or not _payloads(root):
        raise InputError(f"the cache {root} is empty: build the book first (`make book`), then export it")
    files, skipped = {}, []
    for path in _payloads(root):
        digest = cache.sha256_file(path)
        if digest not in (cache.recorded_hashes(path) or []):  # no sidecar, or other bytes: not intact
            skipped.append(path.relative_to(root).as_posix())
            continue
        files[path.relative_to(root).as_posix()] = {"sha256": digest, "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "files": files, "skipped": skipped}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            for rel in files:
                tar.add(root / rel, arcname=rel, recursive=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def _safe_name(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or name.endswith(".sha256"):
        raise InputError(f"the cache kit holds a file named {name!r}, outside the cache or a hash sidecar; "
                         "refusing it: export the kit again with `tbar cache export`")
    return p.as_posix()


def _read_manifest(tar: tarfile.TarFile, src: Path) -> dict:
    try:
        member = tar.getmember(MANIFEST)
        manifest = json.loads(tar.extractfile(member).read())
    except (KeyError, AttributeError, ValueError) as e:
        raise InputError(f"{src} has no readable {MANIFEST}: it is not a cache kit made by `tbar cache export`") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise InputError(f"{src}: unknown cache kit format {manifest.get('format') if isinstance(manifest, dict) else '?'!r}"
                         f" (this version reads {FORMAT}); export it again with this version's `tbar cache export`")
    return manifest


def _members(tar: tarfile.TarFile, manifest: dict, src: Path) -> dict[str, tarfile.TarInfo]:
    """The kit's files by name, each a regular file listed in the manifest; every listed file present."""
    out = {}
    for m in tar.getmembers():
        if m.name == MANIFEST:
            continue
        name = _safe_name(m.name)
        if not m.isfile():
            raise InputError(f"{src}: {m.name!r} is not a regular file (a link or device); refusing the kit")
        if name not in manifest["files"]:
            raise InputError(f"{src}: {m.name!r} is not in the kit's manifest; refusing the kit")
        out[name] = m
    missing = sorted(set(manifest["files"]) - set(out))
    if missing:
        raise InputError(f"{src} lists {len(missing)} files it does not hold (first: {missing[0]}): the kit is "
                         "incomplete, perhaps truncated; copy it again or export it again")
    return out


def import_kit(src: str | os.PathLike, root: Path | None = None) -> dict:
    """Check every file of the kit ``src`` against its manifest, then add to the cache the files it does not
    hold yet. Returns counts: ``added``, ``same`` (already there), ``kept`` (the cache holds other bytes
    under that name and keeps them)."""
    src, root = Path(src), Path(root or cache.cache_root())
    if not src.is_file():
        raise InputError(f"no cache kit at {src}: give the file `tbar cache export` wrote")
    try:
        with tarfile.open(src, "r:*") as tar:
            manifest = _read_manifest(tar, src)
            members = _members(tar, manifest, src)
            for name, m in members.items():  # every byte checked before anything is written
                want, f, h = manifest["files"][name]["sha256"], tar.extractfile(m), hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                if h.hexdigest() != want:
                    raise InputError(f"{src}: {name} does not match its sha256 in the manifest: the kit is "
                                     "corrupted; nothing was imported; copy it again or export it again")
            counts = {"added": 0, "same": 0, "kept": 0}
            for name, m in members.items():
                dest, want = root / name, manifest["files"][name]["sha256"]
                if dest.exists():
                    counts["same" if cache.sha256_file(dest) == want else "kept"] += 1
                    continue
                blob = tar.extractfile(m).read()
                if cache.sha256_bytes(blob) != want:
                    raise InputError(f"{src} changed while it was imported ({name}); import it again")
                cache.atomic_write_bytes(dest, blob)
                counts["added"] += 1
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"{src} is not a readable cache kit ({e}): it may be truncated; copy it again or "
                         "export it again with `tbar cache export`") from e
    return counts
