"""The identifier scan finds planted identifiers by kind, column and row, checks checksums so that ordinary numbers
raise no alarm, flags columns by name, and redacts."""

from __future__ import annotations

import pytest

from tujie_privacy.scan import china_id_valid, find_identifiers, iban_valid, luhn, redact, scan_records

PLANTED = {
    "email": "write to li.wei+test@example.co.uk today",
    "card_number": "card 4111 1111 1111 1111 expires soon",
    "iban": "pay to GB82 WEST 1234 5698 7654 32",
    "china_resident_id": "证件号 11010519491231002X",
    "us_ssn": "ssn 123-45-6789",
    "ip_address": "login from 192.168.10.42",
    "phone": "call +44 20 7946 0958",
    "url": "see https://example.org/patients/17",
    "date_of_birth": "DOB: 1984-03-12",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_each_planted_identifier_is_found_as_its_kind(kind: str) -> None:
    assert [k for k, _ in find_identifiers(PLANTED[kind])] == [kind]


def test_checksums_reject_lookalikes() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB83WEST12345698765432")
    assert china_id_valid("11010519491231002X") and not china_id_valid("110105194912310021")
    for lookalike in ("4111 1111 1111 1112", "000-12-3456", "999.1.1.1", "110105194912310021"):
        assert find_identifiers(lookalike) == [], lookalike


def test_clean_numeric_columns_raise_no_alarm() -> None:
    records = [
        (i + 2, {"amount": f"{1234.5 + i * 17.25:.2f}", "count": str(10**9 + 7 * i), "score": f"{i / 7:.6f}"})
        for i in range(500)
    ]
    records += [(600, {"amount": "4111111111111112", "count": "20240131", "score": "1e-5"})]
    report = scan_records(records)
    assert report.clean and report.rows == 501, report.markdown()


def test_findings_give_counts_columns_and_rows_and_names_flag_columns() -> None:
    records = [
        (2, {"note": PLANTED["email"], "value": "3.5"}),
        (3, {"note": "nothing here", "value": "4.0"}),
        (4, {"note": PLANTED["email"] + " or " + PLANTED["phone"], "value": "2.5"}),
        (5, {"patient_name": "Ann Smith", "note": PLANTED["card_number"]}),
    ]
    report = scan_records(records)
    assert report.counts == {"email": 2, "phone": 1, "card_number": 1}
    by = {(f.column, f.kind): f for f in report.findings}
    assert by[("note", "email")].rows == [2, 4] and by[("note", "card_number")].rows == [5]
    assert report.named_columns == {"patient_name": "name"} and not report.clean
    assert "| note | email | 2 | 2, 4 |" in report.markdown()


def test_redact_replaces_every_identifier() -> None:
    text = PLANTED["email"] + "; " + PLANTED["card_number"] + "; " + PLANTED["us_ssn"]
    redacted = redact(text)
    assert redacted == "write to [EMAIL] today; card [CARD_NUMBER] expires soon; ssn [US_SSN]"
    assert find_identifiers(redacted) == []
