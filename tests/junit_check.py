"""Check a `--junit` file the way a CI server reads it: the schema (tests/junit.xsd, with lxml when it is
installed), then what a schema cannot say: every count attribute matches the cases it counts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = Path(__file__).resolve().parent / "junit.xsd"
COUNTED = {"failures": "failure", "errors": "error", "skipped": "skipped"}


def _validate_schema(path: Path) -> None:
    try:
        from lxml import etree
    except ImportError:  # the structural checks below still run
        return
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    doc = etree.parse(str(path))
    assert schema.validate(doc), f"{path} does not validate: {schema.error_log}"


def junit_outcomes(path: Path) -> dict[str, str]:
    """{"<suite>/<case name>": "pass" | "failure" | "skipped" | "error"}, after validating the file."""
    _validate_schema(path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    totals = dict.fromkeys(("tests", "failures", "errors"), 0)
    outcomes: dict[str, str] = {}
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases), suite.attrib
        for attr, tag in COUNTED.items():
            assert int(suite.get(attr, "0")) == sum(len(c.findall(tag)) for c in cases), (attr, suite.attrib)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        for case in cases:
            assert case.get("name") and case.get("classname")
            kinds = [tag for tag in ("error", "failure", "skipped") if case.find(tag) is not None]
            assert len(kinds) <= 1, ET.tostring(case)
            name = f"{suite.get('name')}/{case.get('name')}"
            assert name not in outcomes, f"duplicate case {name}"
            outcomes[name] = kinds[0] if kinds else "pass"
            for tag in ("failure", "error", "skipped"):
                for el in case.findall(tag):
                    assert el.get("message"), f"{name}: <{tag}> without a message"
    for key, total in totals.items():
        assert int(root.get(key, "0")) == total, (key, root.attrib)
    return outcomes
