#!/usr/bin/env python3
"""Builds bench/perplexity/text.txt, the text `hanzo-candle perplexity` is
measured on (docs/PERPLEXITY.md), from packages of the ordinary registries:

1. English prose: the start of Jane Austen's "Persuasion" (1817, public
   domain; Project Gutenberg's text) as the Debian package r-cran-janeaustenr
   1.0.0-1 ships it, in R's lazy-load database data/Rdata.rdb (zlib blobs of
   XDR-serialized character vectors, one line per element).
2. Code: the start of src/lib.rs of the Rust crate smallvec 1.16.6 from
   crates.io (MIT OR Apache-2.0), as cargo unpacks it into ~/.cargo/registry.
3. Latin: the five excerpts of Ovid's "Ars amatoria" (public domain) that the
   Debian package r-cran-tm ships as texts/txt/ovid_*.txt.

    apt-get download r-cran-janeaustenr r-cran-tm   # into --debs
    python3 scripts/perplexity_text.py --debs DIR

Needs dpkg-deb; writes the text and prints its size.
"""
import argparse
import glob
import os
import pathlib
import struct
import subprocess
import tempfile
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bench/perplexity/text.txt"
PROSE_LINES = 720  # Persuasion, chapters 1 to 3
CODE_LINES = 300
SMALLVEC = "smallvec-1.16.6"


def extract(deb, into):
    subprocess.run(["dpkg-deb", "-x", deb, into], check=True)


def r_strings(blob):
    """The elements of an XDR-serialized R character vector (format 3)."""
    assert blob[:2] == b"X\n", "not an XDR serialization"
    pos = 2 + 12
    (enc_len,) = struct.unpack(">i", blob[pos : pos + 4])
    pos += 4 + enc_len
    flags, n = struct.unpack(">ii", blob[pos : pos + 8])
    pos += 8
    assert flags & 0xFF == 16, "not a character vector"
    out = []
    for _ in range(n):
        _, length = struct.unpack(">ii", blob[pos : pos + 8])
        pos += 8
        if length < 0:
            out.append("")
            continue
        out.append(blob[pos : pos + length].decode("utf-8"))
        pos += length
    return out


def austen_novels(rdb):
    data = open(rdb, "rb").read()
    pos, novels = 0, []
    while pos < len(data):
        inflate = zlib.decompressobj()
        novels.append(r_strings(inflate.decompress(data[pos + 4 :])))
        pos = len(data) - len(inflate.unused_data)
    return novels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--debs", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract(glob.glob(os.path.join(args.debs, "r-cran-janeaustenr_*.deb"))[0], tmp)
        extract(glob.glob(os.path.join(args.debs, "r-cran-tm_*.deb"))[0], tmp)
        lib = pathlib.Path(tmp) / "usr/lib/R/site-library"
        novels = austen_novels(lib / "janeaustenr/data/Rdata.rdb")
        persuasion = next(n for n in novels if n[0] == "Persuasion")
        prose = "\n".join(persuasion[:PROSE_LINES]).strip() + "\n"
        latin = "\n".join(
            (lib / f"tm/texts/txt/ovid_{i}.txt").read_text(encoding="latin-1").strip("\n")
            for i in range(1, 6)
        )
    home = pathlib.Path.home()
    (lib_rs,) = glob.glob(str(home / ".cargo/registry/src/*" / SMALLVEC / "src/lib.rs"))[:1]
    code = "".join(open(lib_rs, encoding="utf-8").readlines()[:CODE_LINES])
    OUT.write_text(prose + "\n\n" + code + "\n\n" + latin + "\n", encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
