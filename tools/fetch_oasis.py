"""Download and unpack the public neurite-OASIS archives (2D slices or 3D volumes).

    python tools/fetch_oasis.py --which 2d --out_dir data/        (needs internet)
    python tools/fetch_oasis.py --url file:///path/to/archive.tar --sha256 <hex> --out_dir d/

Shows a progress bar, checks the archive's sha256 when one is given (and prints it
always), and unpacks into --out_dir only once the download is complete and verified: the
archive is written to a temporary file first, members are extracted with tarfile's
'data' filter (no absolute paths, no links out of the folder).
"""

import argparse
import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ARCHIVES = {
    "2d": "https://surfer.nmr.mgh.harvard.edu/ftp/data/neurite/data/neurite-oasis.2d.v1.0.tar",
    "3d": "https://surfer.nmr.mgh.harvard.edu/ftp/data/neurite/data/neurite-oasis.v1.0.tar",
}


class FetchError(RuntimeError):
    pass


def download(url, path, progress=sys.stderr, chunk=1 << 20):
    """Stream `url` to `path`; returns its sha256 hex digest."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (OSError, ValueError) as err:
        raise FetchError(f"{url}: cannot open ({err})") from None
    total = int(response.headers.get("Content-Length") or 0)
    done = 0
    with response, open(path, "wb") as out:
        while block := response.read(chunk):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                share = f"{100 * done / total:5.1f}% " if total else ""
                progress.write(f"\r{share}{done / 2**20:8.1f} MiB")
    if progress:
        progress.write("\n")
    if total and done != total:
        raise FetchError(f"{url}: download ended after {done} of {total} bytes")
    return digest.hexdigest()


def fetch(url, out_dir, sha256=None, progress=sys.stderr):
    """Download `url` (a tar, optionally compressed) and unpack it into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".download-", suffix=".tar")
    os.close(fd)
    try:
        digest = download(url, tmp, progress)
        if sha256 and digest != sha256.lower():
            raise FetchError(f"{url}: sha256 {digest} does not match the expected {sha256}")
        try:
            with tarfile.open(tmp) as archive:
                archive.extractall(out_dir, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise FetchError(f"{url}: not a readable tar archive ({err})") from None
    finally:
        os.remove(tmp)
    return digest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--which", choices=sorted(ARCHIVES), help="neurite-OASIS 2d or 3d")
    source.add_argument("--url", help="any tar archive URL (http(s) or file://)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--sha256", help="expected checksum of the archive")
    args = parser.parse_args(argv)
    url = args.url or ARCHIVES[args.which]
    try:
        digest = fetch(url, args.out_dir, args.sha256)
    except FetchError as err:
        sys.exit(f"error: {err}")
    print(f"unpacked {url} into {args.out_dir} (sha256 {digest})")


if __name__ == "__main__":
    main()
