"""The organisation tree: procuratorates keyed by their GB/T 2260 region code.

    330000 浙江省人民检察院                province
    └── 330800 衢州市人民检察院            city       parent = code[:2] + "0000"
        └── 330803 衢江区人民检察院        district   parent = code[:4] + "00"
    420000 湖北省人民检察院
    └── 429004 仙桃市人民检察院            district   directly under its province (省直辖县级)

Authorization reads the tree: a role held at a city may cover its districts, and a request
that reaches another region's data needs the organisation covering both. So the tree fails
closed: a malformed code, a parent that does not match the code, a parent missing from the
tree, a duplicate or an empty tree is refused, never repaired. Level and possible parents
follow from the code alone, which also rules out cycles. The file is `policies/orgs.yaml`;
the module is pure apart from `load_orgs` reading it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from xiezhi.errors import Conflict, InvalidInput, NotFound

__all__ = ["OrgLevel", "OrgTree", "Organisation", "load_orgs", "parse_orgs"]

_CODE = re.compile(r"[0-9]{6}")  # not \d: that also matches full-width and other Unicode digits
# The 31 provincial-level regions that have a people's procuratorate (no 71, 81, 82).
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65".split()
)
_MAX_NAME = 64
_FIELDS = frozenset({"code", "name", "parent"})


class OrgLevel(StrEnum):
    PROVINCE = "province"
    CITY = "city"
    DISTRICT = "district"


def _level(code: str) -> OrgLevel:
    if code[2:] == "0000":
        return OrgLevel.PROVINCE
    if code[4:] == "00":
        return OrgLevel.CITY
    return OrgLevel.DISTRICT


def _allowed_parents(code: str) -> tuple[str, ...]:
    """The parents a code may have: none, its province, or its city or (省直辖县级) province."""
    province, city = code[:2] + "0000", code[:4] + "00"
    return {OrgLevel.PROVINCE: (), OrgLevel.CITY: (province,), OrgLevel.DISTRICT: (city, province)}[_level(code)]


@dataclass(frozen=True, slots=True)
class Organisation:
    """One procuratorate. Valid by construction: raises InvalidInput (code org_invalid)."""

    code: str
    name: str
    parent: str | None

    def __post_init__(self) -> None:
        _check_code(self.code)
        _check_name(self.code, self.name)
        _check_parent(self.code, self.parent)

    @property
    def level(self) -> OrgLevel:
        return _level(self.code)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="org_invalid")


def _check_code(code: object) -> None:
    if not isinstance(code, str):
        raise _invalid(f"organisation code must be a string, not {type(code).__name__}")
    if not _CODE.fullmatch(code):
        raise _invalid(f"organisation {code!r}: code must be exactly 6 ASCII digits")
    if code == "000000":
        raise _invalid("organisation 000000: not a region code")
    if code[:2] not in _PROVINCES:
        raise _invalid(f"organisation {code}: {code[:2]} is not a province code")


def _check_name(code: str, name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise _invalid(f"organisation {code}: name must be a non-empty string")
    # No control characters or lone surrogates: names reach audit logs and the digest's UTF-8.
    if not name.isprintable():
        raise _invalid(f"organisation {code}: name must be printable text on one line")
    if len(name) > _MAX_NAME:
        raise _invalid(f"organisation {code}: name is longer than {_MAX_NAME} characters")


def _check_parent(code: str, parent: object) -> None:
    allowed = _allowed_parents(code)
    if not allowed:
        if parent is not None:
            raise _invalid(f"organisation {code}: a province has no parent, not {parent!r}")
    elif parent not in allowed:
        raise _invalid(f"organisation {code}: a {_level(code)}'s parent must be {' or '.join(allowed)}, not {parent!r}")


def _index(listed: list[Organisation]) -> dict[str, Organisation]:
    """Key the organisations by code; refuse an empty list, duplicates and missing parents."""
    by_code: dict[str, Organisation] = {}
    for index, org in enumerate(listed):
        if not isinstance(org, Organisation):
            raise _invalid(f"organisations[{index}]: not an Organisation")
        if org.code in by_code:
            raise _invalid(f"organisations[{index}] ({org.code}): duplicate code")
        by_code[org.code] = org
    if not by_code:
        raise _invalid("no organisations: authorization would have nothing to decide on")
    for index, org in enumerate(listed):  # a second pass: parents may come after their children
        if org.parent is not None and org.parent not in by_code:
            raise _invalid(f"organisations[{index}] ({org.code}): parent {org.parent} is not in the tree")
    return by_code


class OrgTree:
    """An immutable, validated tree. Construction raises InvalidInput (org_invalid) for an
    empty tree, a duplicate code or a parent not in the tree, naming the position."""

    __slots__ = ("_children", "_digest", "_orgs")

    def __init__(self, orgs: Iterable[Organisation]) -> None:
        by_code = _index(list(orgs))
        self._orgs = {code: by_code[code] for code in sorted(by_code)}
        children: dict[str, list[str]] = {code: [] for code in self._orgs}
        for org in self._orgs.values():
            if org.parent is not None:
                children[org.parent].append(org.code)  # appended in code order, so sorted
        self._children = {code: tuple(kids) for code, kids in children.items()}
        canonical = json.dumps(self.to_mapping(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        self._digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    # --- lookups ----------------------------------------------------------------------

    def get(self, code: str) -> Organisation:
        """The organisation with this code. Raises NotFound (code unknown_org)."""
        if code not in self:
            raise NotFound(f"unknown organisation {code!r}", code="unknown_org")
        return self._orgs[code]

    def __contains__(self, code: object) -> bool:
        # isinstance first: a non-str (say a list) must answer False, not raise TypeError.
        return isinstance(code, str) and code in self._orgs

    def __iter__(self) -> Iterator[Organisation]:
        """Organisations in code order."""
        return iter(self._orgs.values())

    def __len__(self) -> int:
        return len(self._orgs)

    def children(self, code: str) -> tuple[str, ...]:
        """Codes of the direct children, sorted. Raises NotFound (code unknown_org)."""
        return self._children[self.get(code).code]

    def ancestors(self, code: str) -> tuple[str, ...]:
        """`code` itself, then its parent, up to its province. Raises NotFound (unknown_org)."""
        chain = [self.get(code).code]
        while (parent := self._orgs[chain[-1]].parent) is not None:
            chain.append(parent)
        return tuple(chain)

    def covers(self, ancestor: str, code: str) -> bool:
        """Whether `ancestor` is `code` or one of its ancestors. Never raises.

        Policy matchers call this, so an unknown code of either side answers False.
        """
        return ancestor in self and code in self and ancestor in self.ancestors(code)

    def common_ancestor(self, a: str, b: str) -> str | None:
        """The lowest organisation covering both (`a` itself when `a` covers `b`).

        None when either code is unknown or they lie in different provinces. Never raises.
        """
        if a not in self or b not in self:
            return None
        above_b = set(self.ancestors(b))
        return next((code for code in self.ancestors(a) if code in above_b), None)

    # --- changes: each returns a new tree ---------------------------------------------

    def with_org(self, org: Organisation) -> OrgTree:
        """A new tree with `org` added.

        Raises Conflict (org_exists) if its code is taken, InvalidInput (org_invalid) if
        its parent is not in the tree.
        """
        if org.code in self:
            raise Conflict(f"organisation {org.code} already exists", code="org_exists")
        return OrgTree([*self, org])

    def without(self, code: str) -> OrgTree:
        """A new tree without `code`.

        Raises NotFound (unknown_org), Conflict (org_has_children) while it has children,
        Conflict (org_last) for the last organisation: an empty tree would fail closed.
        """
        if self.children(code):
            raise Conflict(f"organisation {code} still has children", code="org_has_children")
        if len(self) == 1:
            raise Conflict(f"organisation {code} is the last one", code="org_last")
        return OrgTree(org for org in self if org.code != code)

    def renamed(self, code: str, name: str) -> OrgTree:
        """A new tree with `code` renamed. Raises NotFound (unknown_org), InvalidInput (org_invalid)."""
        old = self.get(code)
        return OrgTree(Organisation(code, name, old.parent) if org is old else org for org in self)

    # --- identity ---------------------------------------------------------------------

    def to_mapping(self) -> list[dict[str, str | None]]:
        """The organisations in code order, as the YAML file spells them."""
        return [{"code": org.code, "name": org.name, "parent": org.parent} for org in self]

    def digest(self) -> str:
        """SHA-256 hex of the canonical JSON of `to_mapping()`; independent of input order.

        Canonical: keys sorted, no whitespace, UTF-8 without escapes — for these string-only
        values the same bytes RFC 8785 gives, so another implementation can recompute it.
        """
        return self._digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrgTree) and self._orgs == other._orgs

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"OrgTree({len(self)} organisations, digest {self._digest[:12]})"


# --- the file -----------------------------------------------------------------------------


def parse_orgs(raw: object, where: str) -> OrgTree:
    """Build a tree from `{"organisations": [{code, name, parent}, …]}`; `parent` may be omitted.

    Raises InvalidInput (code org_invalid) whose message starts with `where` and names the
    entry index. An unquoted code arrives from YAML as an int and is refused, not guessed at:
    leading zeros or octal readings would make it a different code.
    """
    if not isinstance(raw, dict) or set(raw) != {"organisations"}:
        raise _invalid(f"{where}: the file holds one mapping with the single key 'organisations'")
    entries = raw["organisations"]
    if not isinstance(entries, list):
        raise _invalid(f"{where}: 'organisations' must be a list")
    try:
        return OrgTree([_parse_entry(entry, f"organisations[{index}]") for index, entry in enumerate(entries)])
    except InvalidInput as exc:
        raise _invalid(f"{where}: {exc.public_message}") from None


def _parse_entry(entry: object, at: str) -> Organisation:
    if not isinstance(entry, dict):
        raise _invalid(f"{at}: an organisation is a mapping of code, name and parent")
    unknown = sorted(str(key) for key in set(entry) - _FIELDS)
    if unknown:
        raise _invalid(f"{at}: unknown field(s) {', '.join(unknown)}")
    if "code" not in entry or "name" not in entry:
        raise _invalid(f"{at}: code and name are required")
    code, parent = entry["code"], entry.get("parent")
    if not isinstance(code, str):
        raise _invalid(f"{at}: code must be a quoted string, not {type(code).__name__} {code!r}")
    if parent is not None and not isinstance(parent, str):
        raise _invalid(f"{at}: parent must be a quoted string or null, not {type(parent).__name__} {parent!r}")
    try:
        return Organisation(code, entry["name"], parent)
    except InvalidInput as exc:
        raise _invalid(f"{at}: {exc.public_message}") from None


def load_orgs(path: Path) -> OrgTree:
    """Read and parse an organisations file (UTF-8 YAML).

    Raises InvalidInput (code org_invalid) for bad YAML or content; OSError if unreadable.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise _invalid(f"{path.name}: not valid YAML{line}") from None
    return parse_orgs(raw, path.name)
