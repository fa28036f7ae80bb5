"""Test results from a JUnit XML file (what `pytest --junitxml` writes; CI writes var/junit.xml),
and the test cases written in the repository (read from the source, never imported)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from defusedxml import ElementTree
from django.conf import settings

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class CaseResult:
    node_id: str
    outcome: str
    seconds: float


@dataclass
class JUnitReport:
    path: str
    timestamp: str
    cases: dict[str, CaseResult]
    error: str = ""

    @property
    def loaded(self) -> bool:
        return not self.error

    def summary(self) -> dict[str, Any]:
        counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
        for case in self.cases.values():
            counts[case.outcome] += 1
        return {
            "file": self.path,
            "timestamp": self.timestamp,
            "error": self.error,
            "cases": len(self.cases),
            **counts,
        }


def _root() -> Path:
    return Path(settings.BASE_DIR)


def node_id_for(classname: str, name: str, file: str = "") -> str:
    """pytest's node id from a JUnit testcase (`file` when xunit1 gives it, else the longest
    prefix of the dotted classname that is a file in the repository)."""
    parts = classname.split(".") if classname else []
    if file:
        module = file.replace("\\", "/")
        depth = len(Path(module).with_suffix("").parts)
        return "::".join([module, *parts[depth:], name])
    root = _root()
    for cut in range(len(parts), 0, -1):
        candidate = "/".join(parts[:cut]) + ".py"
        if (root / candidate).is_file():
            return "::".join([candidate, *parts[cut:], name])
    return "::".join(["/".join(parts) + ".py", name]) if parts else name


def junit_load(path: str | Path | None) -> JUnitReport:
    if not path:
        return JUnitReport(path="", timestamp="", cases={}, error="no JUnit XML given")
    file = Path(path)
    if not file.is_file():
        return JUnitReport(path=str(path), timestamp="", cases={}, error="file not found")
    try:
        tree = ElementTree.parse(str(file))
    except ElementTree.ParseError:
        return JUnitReport(path=str(path), timestamp="", cases={}, error="not valid XML")
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    timestamp = next((s.get("timestamp", "") for s in suites if s.get("timestamp")), "")
    if not timestamp:
        modified = datetime.fromtimestamp(file.stat().st_mtime, tz=UTC)
        timestamp = modified.isoformat(timespec="seconds")
    cases: dict[str, CaseResult] = {}
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome = PASSED
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = FAILED
            elif case.find("skipped") is not None:
                outcome = SKIPPED
            node = node_id_for(
                case.get("classname", ""), case.get("name", ""), case.get("file", "")
            )
            previous = cases.get(node)
            # A test reported twice (an error in teardown after a pass): the worse result wins.
            if previous is None or previous.outcome == PASSED:
                cases[node] = CaseResult(node, outcome, float(case.get("time") or 0))
    return JUnitReport(path=str(path), timestamp=timestamp, cases=cases)


def matching(report: JUnitReport, test_id: str) -> list[CaseResult]:
    """Cases a test id names: an exact node id (and its parametrisations), or every case in a
    file or directory when the id is a path."""
    if "::" in test_id:
        return [
            case
            for node, case in report.cases.items()
            if node == test_id or node.startswith(test_id + "[") or node.startswith(test_id + "::")
        ]
    prefix = test_id if test_id.endswith((".py", "/")) else test_id + "/"
    return [
        case
        for node, case in report.cases.items()
        if node.split("::", 1)[0] == test_id or node.startswith(prefix)
    ]


def verdict(cases: list[CaseResult]) -> str:
    if any(c.outcome == FAILED for c in cases):
        return FAILED
    if any(c.outcome == PASSED for c in cases):
        return PASSED
    return SKIPPED if cases else "not run"


@dataclass(frozen=True)
class SourceCase:
    node_id: str
    doc: str


def source_cases(path: str) -> list[SourceCase]:
    """The test functions a file (or every test_*.py under a directory) defines, with the first
    line of each docstring."""
    root = _root()
    target = root / path
    files = sorted(target.rglob("test_*.py")) if target.is_dir() else [target]
    found: list[SourceCase] = []
    for file in files:
        if not file.is_file():
            continue
        module = file.relative_to(root).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                found.append(SourceCase(f"{module}::{node.name}", _doc(node)))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for item in node.body:
                    if isinstance(
                        item, ast.FunctionDef | ast.AsyncFunctionDef
                    ) and item.name.startswith("test"):
                        found.append(SourceCase(f"{module}::{node.name}::{item.name}", _doc(item)))
    return found


def _doc(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = ast.get_docstring(node) or ""
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ")


def test_id_exists(test_id: str) -> bool:
    """The id names a file, directory or test function that is in the repository."""
    path, _, rest = test_id.partition("::")
    target = _root() / path
    if not rest:
        return target.exists()
    wanted = test_id.split("[", 1)[0]
    return any(case.node_id == wanted for case in source_cases(path))
