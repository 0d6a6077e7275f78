#!/usr/bin/env python3
"""The Python baseline for the sync benchmark (see bench/README.md).

What a municipal data engineer would write with the standard library only: stream the
export with xml.etree.ElementTree.iterparse (clearing elements as it goes), check each BSN
with the elfproef, pseudonymise it with HMAC-SHA256 under a key, and insert the records into
SQLite with executemany batches inside one transaction.

Usage: baseline.py EXPORT --db PATH [--key matchpoint.key] [--batch 10000]

Prints one line: python records=N seconds=S records_per_sec=R (records = dossiers read,
rejected ones included, as `matchpoint sync` counts `read`).
"""

import argparse
import hashlib
import hmac
import os
import sqlite3
import sys
import time
import tomllib
import xml.etree.ElementTree as ET

SOURCE = "okc-2"
TAG = b"matchpoint:index:bsn:"


def hkdf_sha256(secret, salt, info, length=32):
    """RFC 5869 HKDF, so pseudonyms equal the hub's for the same key file."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def load_key(path):
    if path is None:
        return b"\x5a" * 32
    with open(path, "rb") as f:
        secret = bytes.fromhex(tomllib.load(f)["secret_hex"].strip())
    return hkdf_sha256(secret, b"matchpoint-hkdf-salt-v1", b"matchpoint/v1/index-pseudonym")


def normalise_bsn(text):
    """Digits of a valid BSN (8 digits padded to 9), or None."""
    if text is None:
        return None
    digits = text.strip().replace(" ", "").replace(".", "").replace("-", "")
    if not digits.isdigit() or len(digits) not in (8, 9):
        return None
    digits = digits.zfill(9)
    if digits == "000000000":
        return None
    total = sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1)))
    return digits if total % 11 == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--db", required=True, help="SQLite file to create (replaced)")
    ap.add_argument("--key", help="key file from `matchpoint keygen` (default: a fixed key)")
    ap.add_argument("--batch", type=int, default=10000, help="rows per executemany")
    args = ap.parse_args()

    key = load_key(args.key)
    if os.path.exists(args.db):
        os.remove(args.db)

    started = time.perf_counter()
    db = sqlite3.connect(args.db)
    db.executescript(
        """
        CREATE TABLE involvements (
            source TEXT NOT NULL, source_record_id TEXT NOT NULL, person BLOB NOT NULL,
            organisation_code TEXT NOT NULL, team TEXT, life_domain TEXT NOT NULL, goal TEXT,
            contact_name TEXT, contact_role TEXT, contact_phone TEXT, contact_email TEXT,
            start_date TEXT, end_date TEXT, status TEXT, coordinator INTEGER,
            PRIMARY KEY (source, source_record_id));
        CREATE TABLE relations (
            source TEXT NOT NULL, source_record_id TEXT NOT NULL, kind TEXT NOT NULL,
            other BLOB NOT NULL);
        """
    )

    def pseudonym(digits):
        return hmac.new(key, TAG + digits.encode(), hashlib.sha256).digest()

    read = rejected = 0
    rows, rels = [], []
    db.execute("BEGIN")
    ins = (
        "INSERT OR IGNORE INTO involvements VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    ins_rel = "INSERT INTO relations VALUES (?, ?, ?, ?)"
    ns = ""
    root = None
    for event, elem in ET.iterparse(args.export, events=("start", "end")):
        if event == "start":
            if root is None:
                root = elem
                ns = elem.tag[: elem.tag.index("}") + 1] if elem.tag.startswith("{") else ""
            continue
        if elem.tag != ns + "dossier":
            continue
        read += 1
        rid = elem.get("id")
        bsn = normalise_bsn(elem.findtext(f"{ns}client/{ns}bsn"))
        org = elem.find(f"{ns}organisatie")
        period = elem.find(f"{ns}periode")
        contact = elem.find(f"{ns}contactpersoon")
        if not rid or bsn is None or org is None or period is None or contact is None:
            rejected += 1
        else:
            ok = True
            these = []
            for rel in elem.iterfind(f"{ns}relaties/{ns}relatie"):
                other = normalise_bsn(rel.get("bsn"))
                if other is None:
                    ok = False
                    break
                these.append((SOURCE, rid, rel.get("soort"), pseudonym(other)))
            if not ok:
                rejected += 1
            else:
                rows.append(
                    (
                        SOURCE,
                        rid,
                        pseudonym(bsn),
                        org.get("code"),
                        elem.findtext(f"{ns}team"),
                        elem.findtext(f"{ns}domein"),
                        elem.findtext(f"{ns}doel"),
                        contact.findtext(f"{ns}naam"),
                        contact.findtext(f"{ns}functie"),
                        contact.findtext(f"{ns}telefoon"),
                        contact.findtext(f"{ns}email"),
                        period.get("begin"),
                        period.get("eind"),
                        elem.findtext(f"{ns}status"),
                        elem.findtext(f"{ns}regisseur") == "ja",
                    )
                )
                rels.extend(these)
        elem.clear()
        root.clear()
        if len(rows) >= args.batch:
            db.executemany(ins, rows)
            db.executemany(ins_rel, rels)
            rows, rels = [], []
    db.executemany(ins, rows)
    db.executemany(ins_rel, rels)
    db.commit()
    db.close()
    seconds = time.perf_counter() - started
    print(
        f"python records={read} seconds={seconds:.3f} records_per_sec={read / seconds:.0f} "
        f"rejected={rejected}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
