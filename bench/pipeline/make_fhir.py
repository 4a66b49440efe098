#!/usr/bin/env python3
"""Writes the static FHIR R4 documents the pipeline benchmark's backend serves.

  make_fhir.py DOCROOT BACKEND_BASE BIG_MIB

DOCROOT/small                  100 bytes of text (the proxy-only baseline)
DOCROOT/fhir/Patient/p1        a Patient resource, id p1
DOCROOT/fhir/Observation       searchset Bundle, 100 Observations of Patient/p1
DOCROOT/fhirbig/Observation    searchset Bundle of Observations of Patient/p1,
                               at least BIG_MIB MiB

Every Observation names `"subject": {"reference": "Patient/p1"}`, so the
gateway's patient-compartment check passes every entry (a token for patient p1
may see all of them); `fullUrl` and the `self` link use the backend's own base
URL (BACKEND_BASE + the prefix), as a real FHIR server's would, so the gateway's
base-URL rewrite has work to do. Deterministic: the same arguments give the
same bytes. Prints the sizes and entry counts as key=value lines.
"""
import json
import os
import sys

LOINC = [
    ("8867-4", "Heart rate", "/min", 50, 110),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 170),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55, 105),
    ("29463-7", "Body weight", "kg", 40, 110),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 200),
    ("8310-5", "Body temperature", "Cel", 35, 39),
]


def observation(i, base):
    code, display, unit, lo, hi = LOINC[i % len(LOINC)]
    value = lo + (i * 7919) % (hi - lo + 1)
    oid = f"obs-{i:07d}"
    day = 1 + i % 28
    month = 1 + (i // 28) % 12
    # Compact (about 300 bytes) but realistic: what a vital-signs search returns.
    return {
        "fullUrl": f"{base}/Observation/{oid}",
        "resource": {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": f"2025-{month:02d}-{day:02d}T09:{i % 60:02d}:00+09:00",
            "valueQuantity": {"value": value, "unit": unit},
        },
    }


def bundle(entries, base):
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/Observation?subject=Patient/p1"}],
        "entry": entries,
    }


def write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return len(data)


def main():
    docroot, backend, big_mib = sys.argv[1], sys.argv[2].rstrip("/"), float(sys.argv[3])
    with open(os.path.join(docroot, "small"), "w") as f:
        f.write("a" * 99 + "\n")
    os.chmod(os.path.join(docroot, "small"), 0o644)

    patient = {
        "resourceType": "Patient", "id": "p1",
        "meta": {"versionId": "3", "lastUpdated": "2025-04-01T10:00:00+09:00"},
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "00000001"}],
        "active": True,
        "name": [{"use": "official", "family": "山田", "given": ["太郎"]},
                 {"use": "usual", "family": "Yamada", "given": ["Taro"]}],
        "telecom": [{"system": "phone", "value": "090-0000-0000", "use": "mobile"}],
        "gender": "male", "birthDate": "1980-01-01",
        "address": [{"text": "東京都千代田区千代田1-1", "postalCode": "100-0001", "country": "JP"}],
    }
    sizes = {"patient_bytes": write(os.path.join(docroot, "fhir/Patient/p1"), patient)}

    base = backend + "/fhir"
    sizes["search_bytes"] = write(os.path.join(docroot, "fhir/Observation"),
                                  bundle([observation(i, base) for i in range(100)], base))
    sizes["search_entries"] = 100

    # The large Bundle: grow until it reaches BIG_MIB MiB.
    base = backend + "/fhirbig"
    per_entry = len(json.dumps(observation(0, base), separators=(",", ":"))) + 1
    n = int(big_mib * 1024 * 1024 / per_entry) + 1
    sizes["big_bytes"] = write(os.path.join(docroot, "fhirbig/Observation"),
                               bundle([observation(i, base) for i in range(n)], base))
    sizes["big_entries"] = n
    for k, v in sizes.items():
        print(f"{k}={v}")


if __name__ == "__main__":
    main()
