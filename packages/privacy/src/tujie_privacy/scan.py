"""Find direct identifiers in tabular or text data before training (book ch. 19.3; GDPR/HIPAA direct identifiers).

>>> report = scan_records([(1, {"note": "mail me at ann@example.org"})])
>>> report.counts
{'email': 1}

Each detector is a pattern plus, where the identifier has one, its checksum (Luhn for card numbers, mod 97 for
IBANs, ISO 7064 MOD 11-2 for Chinese resident IDs, the SSA rules for US social security numbers), so that ordinary
numbers are not flagged: a column of amounts, counts or measurements raises no alarm. A match is reported by
kind, column and row; :func:`redact` replaces every match with ``[KIND]``. Fully offline, no model.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tujie_core import DataError, Registry

DETECTORS: Registry[Detector] = Registry("identifier detectors")
ROWS_KEPT = 20  # row numbers kept per (column, kind) in the report


@dataclass(frozen=True)
class Detector:
    """A regular expression for candidates and a check that a candidate really is one (checksum, range)."""

    pattern: re.Pattern[str]
    valid: Callable[[str], bool] = lambda text: True

    def find(self, text: str) -> Iterator[re.Match[str]]:
        return (m for m in self.pattern.finditer(text) if self.valid(m.group()))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def luhn(number: str) -> bool:
    """The Luhn checksum of payment card numbers."""
    digits = [int(d) for d in _digits(number)][::-1]
    total = sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits))
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: move the country code and check digits to the end, letters to numbers, mod 97 == 1."""
    compact = re.sub(r"\s", "", text).upper()
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def china_id_valid(text: str) -> bool:
    """GB 11643: 17 digits and an ISO 7064 MOD 11-2 check character (0-9 or X)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(text[:17], weights, strict=True))
    return "10X98765432"[total % 11] == text[17].upper()


def ssn_valid(text: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    area, group, serial = text.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


DETECTORS.register("email")(Detector(re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")))
DETECTORS.register("url")(Detector(re.compile(r"\bhttps?://[^\s<>\"']+|\bwww\.[^\s<>\"']+\.[a-z]{2,}[^\s<>\"']*")))
DETECTORS.register("card_number")(
    Detector(
        re.compile(r"(?<![\d-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\d-])"),
        lambda t: 13 <= len(_digits(t)) <= 19 and luhn(t),
    )
)
DETECTORS.register("iban")(
    Detector(re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_valid)
)
DETECTORS.register("china_resident_id")(Detector(re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), china_id_valid))
DETECTORS.register("us_ssn")(Detector(re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"), ssn_valid))
DETECTORS.register("ip_address")(
    Detector(
        re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])|\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b"),
        ip_valid,
    )
)
# a phone number needs a leading + or at least two separators, so that a plain integer is never a phone number
DETECTORS.register("phone")(
    Detector(
        re.compile(
            r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}(?!\d)"  # +44 20 7946 0958
            r"|(?<![\w-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"  # (555) 123-4567
        )
    )
)
DETECTORS.register("date_of_birth")(
    Detector(
        re.compile(
            r"(?i)\b(?:dob|d\.o\.b\.|date of birth|born(?: on)?)\s*[:=]?\s*"  # a date after a birth keyword
            r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})"
        )
    )
)

# a column whose name says what it holds is flagged whatever its values look like
NAME_HINTS = {
    "email": ("email", "e-mail", "mail"),
    "phone": ("phone", "mobile", "tel", "telephone"),
    "date_of_birth": ("dob", "birth", "birthday"),
    "name": ("name", "first_name", "last_name", "surname", "full_name", "patient"),
    "address": ("address", "street", "postcode", "zip"),
    "national_id": ("ssn", "national_id", "id_card", "passport", "身份证"),
}


@dataclass
class Finding:
    column: str
    kind: str
    count: int = 0
    rows: list[Any] = field(default_factory=list)


@dataclass
class ScanReport:
    """Matches by kind, the (column, kind) findings with their first rows, and columns flagged by their name."""

    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    named_columns: dict[str, str] = field(default_factory=dict)  # column → kind its name suggests

    @property
    def clean(self) -> bool:
        return not self.counts and not self.named_columns

    def markdown(self) -> str:
        lines = [f"Scanned {self.rows:,} rows.", "", "| column | kind | matches | first rows |", "|---|---|---:|---|"]
        for f in self.findings:
            lines.append(f"| {f.column} | {f.kind} | {f.count:,} | {', '.join(map(str, f.rows))} |")
        for column, kind in self.named_columns.items():
            lines.append(f"| {column} | {kind} (by column name) | – | – |")
        return "\n".join(lines)


def _kinds(names: Iterable[str] | None) -> list[str]:
    return list(names) if names is not None else DETECTORS.names()


def find_identifiers(text: str, kinds: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(kind, matched text)`` for every identifier in ``text``; overlapping matches go to the first kind."""
    found, taken = [], []
    for kind in _kinds(kinds):
        for match in DETECTORS.get(kind).find(text):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            taken.append(span)
            found.append((kind, match.group()))
    return found


def redact(text: str, kinds: Iterable[str] | None = None) -> str:
    """``text`` with every identifier replaced by ``[KIND]``."""
    for kind, value in find_identifiers(text, kinds):
        text = text.replace(value, f"[{kind.upper()}]")
    return text


def column_hint(column: str) -> str | None:
    """The identifier kind a column's name suggests (``email``, ``dob``, ``surname``, ...), or None."""
    words = set(re.split(r"[\W_]+", column.lower())) | {column.lower()}
    return next((kind for kind, hints in NAME_HINTS.items() if words & set(hints)), None)


def scan_records(records: Iterable[tuple[Any, dict[str, Any]]], kinds: Iterable[str] | None = None) -> ScanReport:
    """Scan ``(row id, {column: value})`` records (any size: streamed); every string value is searched."""
    kinds = _kinds(kinds)
    report = ScanReport()
    by_key: dict[tuple[str, str], Finding] = {}
    counts: Counter[str] = Counter()
    for row, record in records:
        report.rows += 1
        for column, value in record.items():
            if value is None:
                continue
            if column not in report.named_columns and (hint := column_hint(str(column))) is not None:
                report.named_columns[str(column)] = hint
            for kind, _ in find_identifiers(str(value), kinds):
                finding = by_key.setdefault((str(column), kind), Finding(str(column), kind))
                finding.count += 1
                counts[kind] += 1
                if len(finding.rows) < ROWS_KEPT and (not finding.rows or finding.rows[-1] != row):
                    finding.rows.append(row)
    report.counts = dict(counts)
    report.findings = sorted(by_key.values(), key=lambda f: (-f.count, f.column, f.kind))
    return report


# ---- files ---------------------------------------------------------------------------------------------------------
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
LINE_SUFFIXES = (".jsonl", ".txt")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, {column: value})`` for every row of a CSV, TSV, JSON-lines or plain-text file, streamed.

    Plain text: one record per line (column ``text``). A JSON line that is not an object is reported as a
    DataError naming its line.
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix not in TABLE_SUFFIXES and suffix not in LINE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv, .tsv, .jsonl or .txt")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if suffix in TABLE_SUFFIXES:
                reader = csv.DictReader(handle, delimiter=TABLE_SUFFIXES[suffix])
                for record in reader:
                    yield reader.line_num, {k: v for k, v in record.items() if k is not None}
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if suffix == ".txt":
                    yield number, {"text": line.rstrip("\r\n")}
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def scan_file(path: str | Path, kinds: Iterable[str] | None = None, redact_to: str | Path | None = None) -> ScanReport:
    """Scan a data file (see :func:`read_records`); ``redact_to`` writes a copy, in the same format, with every
    identifier replaced by ``[KIND]`` (columns flagged only by their name are left as they are: review them)."""
    path = Path(path)
    kinds = _kinds(kinds)
    if redact_to is None:
        return scan_records(read_records(path), kinds)
    out = Path(redact_to)
    if out.resolve() == path.resolve():
        raise DataError(f"{out}: the redacted copy must not overwrite the input")
    suffix = path.suffix.lower()
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer: csv.DictWriter | None = None

        def redacting() -> Iterator[tuple[int, dict[str, Any]]]:
            nonlocal writer
            for row, record in read_records(path):
                yield row, record
                clean = {k: redact(v, kinds) if isinstance(v, str) else v for k, v in record.items()}
                if suffix in TABLE_SUFFIXES:
                    if writer is None:
                        writer = csv.DictWriter(handle, fieldnames=list(record), delimiter=TABLE_SUFFIXES[suffix])
                        writer.writeheader()
                    writer.writerow(clean)
                elif suffix == ".txt":
                    handle.write(clean["text"] + "\n")
                else:
                    handle.write(json.dumps(clean, ensure_ascii=False) + "\n")

        report = scan_records(redacting(), kinds)
    tmp.replace(out)
    return report
