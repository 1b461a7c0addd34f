"""One error root: every error Xiezhi raises on purpose is a XiezhiError, drawn in xiezhi/errors.py."""

from __future__ import annotations

import importlib
import pkgutil
import re

import xiezhi.errors
from audit_log.merkle import ProofFailed
from audit_log.note import NoteError
from audit_log.witness import WitnessRefusal
from xiezhi.errors import XiezhiError

PACKAGES = ("xiezhi", "audit_log", "gateway", "connectors", "requester", "devkit", "cli")
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Za-z]+)\s+(?P<status>\d{3})\s+(?P<text>.*)$")


def _import_everything() -> None:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for found in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if not found.name.endswith(".__main__"):  # runs the command line when imported
                importlib.import_module(found.name)


def _subclasses(cls: type[XiezhiError]) -> set[type[XiezhiError]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found))


def _drawn() -> dict[str, tuple[str, int, str, str | None]]:
    """The tree in xiezhi/errors.py's docstring: name → (parent, status, text, module named)."""
    doc = xiezhi.errors.__doc__ or ""
    tree: dict[str, tuple[str, int, str, str | None]] = {}
    trail: list[tuple[int, str]] = [(-1, "XiezhiError")]
    for line in doc.splitlines():
        match = _LINE.match(line.strip("\n"))
        if match is None or not match["indent"].strip():
            continue
        depth = len(match["indent"])
        while trail[-1][0] >= depth:
            trail.pop()
        module = re.search(r"\(([a-z_]+(?:\.[a-z_]+)+)\)$", match["text"])
        tree[match["name"]] = (trail[-1][1], int(match["status"]), match["text"], module[1] if module else None)
        trail.append((depth, match["name"]))
    return tree


def test_the_audit_log_errors_share_the_root() -> None:
    for cls in (ProofFailed, NoteError, WitnessRefusal):
        assert issubclass(cls, XiezhiError), cls
    refusal = WitnessRefusal(409, "old size mismatch", "7\n", "text/x.tlog.size")
    assert (refusal.status, refusal.body, refusal.content_type, str(refusal)) == (
        409,
        "7\n",
        "text/x.tlog.size",
        "old size mismatch",
    )
    assert WitnessRefusal(403, "unsigned").body == "unsigned\n"


def test_every_error_class_is_drawn_with_its_parent_status_and_module() -> None:
    _import_everything()
    drawn = _drawn()
    found = _subclasses(XiezhiError)
    assert {cls.__name__ for cls in found} == set(drawn), "xiezhi/errors.py's tree and the classes differ"
    for cls in found:
        parent, status, _, module = drawn[cls.__name__]
        assert cls.__mro__[1].__name__ == parent, f"{cls.__name__} is drawn under {parent}"
        assert cls.status == status, f"{cls.__name__} is drawn with status {status}, has {cls.status}"
        expected = None if cls.__module__ == "xiezhi.errors" else cls.__module__
        assert module == expected, f"{cls.__name__} is drawn in {module}, defined in {cls.__module__}"


def test_the_tree_reader_sees_a_missing_or_wrong_line() -> None:
    drawn = _drawn()
    assert drawn["ApprovalRequired"][:2] == ("Conflict", 409)
    assert drawn["InvalidIdentifier"][:2] == ("InvalidInput", 400)
    assert drawn["NoteError"] == (
        "XiezhiError",
        400,
        "a signed note, note key or checkpoint is malformed or unverified (audit_log.note)",
        "audit_log.note",
    )
    assert "XiezhiError" not in drawn  # the root line is the header, not a child
