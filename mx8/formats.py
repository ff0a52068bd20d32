"""Reading and writing the MX8 metadata files (see docs/FORMAT.md).

``_mx8/manifest.tsv`` (parsed in C by ``mx8._core.Manifest``; rendered here)::

    schema_version=0
    sample_id \\t location \\t byte_offset \\t byte_length \\t decode_hint

``_mx8/labels.tsv``::

    schema_version=1
    label_id \\t percent-encoded label
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from .errors import ManifestError

MANIFEST_HEADER = "schema_version=0"
LABELS_HEADER = "schema_version=1"
IMAGEFOLDER_HINT = "mx8:vision:imagefolder;label_id={}"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")

# (location, byte_offset, byte_length, label_id or None)
Record = Tuple[str, int, int, Optional[int]]


def render_manifest(records: Iterable[Record]) -> bytes:
    """Canonical manifest bytes: the exact bytes manifest_hash is computed over."""
    lines = [MANIFEST_HEADER]
    for i, (loc, off, length, label) in enumerate(records):
        if "\t" in loc or "\n" in loc:
            raise ManifestError(f"location {loc!r} contains a tab or newline")
        hint = "" if label is None else IMAGEFOLDER_HINT.format(label)
        lines.append(f"{i}\t{loc}\t{off}\t{length}\t{hint}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def percent_encode(label: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}"
                   for b in label.encode("utf-8", "surrogateescape"))


_HEX = frozenset(b"0123456789ABCDEFabcdef")


def percent_decode(text: str, where: str) -> str:
    """Strict: '%' must be followed by exactly two hex digits, and every other byte must be
    one percent_encode leaves as it is (so '%+6', '% 6' and raw spaces are refused)."""
    if not text.isascii():
        raise ManifestError(f"{where}: label {text[:60]!r} is not percent-encoded ASCII")
    data = text.encode("ascii")
    raw = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25:  # '%'
            pair = data[i + 1:i + 3]
            if len(pair) != 2 or not all(b in _HEX for b in pair):
                raise ManifestError(f"{where}: bad percent escape in label {text[:60]!r}")
            raw.append(int(pair, 16))
            i += 3
        elif data[i] in _UNRESERVED:
            raw.append(data[i])
            i += 1
        else:
            raise ManifestError(f"{where}: label {text[:60]!r} has {chr(data[i])!r}, which must be "
                                f"percent-encoded")
    return raw.decode("utf-8", "surrogateescape")


def render_labels(labels: Sequence[str]) -> bytes:
    lines = [LABELS_HEADER] + [f"{i}\t{percent_encode(name)}" for i, name in enumerate(labels)]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_labels(data: bytes, source: str) -> List[str]:
    """Labels by id. Ids must run 0..K-1 in order (as mx8 and MX8 write them)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: labels file is not ASCII (labels are percent-encoded)") from None
    if "\r" in text:
        line = text[:text.index("\r")].count("\n") + 1
        raise ManifestError(f"{source} line {line}: carriage return (labels files use \\n line endings)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != LABELS_HEADER:
        found = lines[0][:40] if lines else ""
        raise ManifestError(f"{source} line 1: expected '{LABELS_HEADER}', found '{found}'")
    labels = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 2 or parts[0] != str(len(labels)):
            raise ManifestError(f"{source} line {lineno}: expected '{len(labels)}\\t<label>', found {line[:60]!r}")
        labels.append(percent_decode(parts[1], f"{source} line {lineno}"))
    return labels
