"""The roster: a deployment's connectors, one configuration file each, in one folder.

    deploy/connectors/
      roster.yaml          order: [court, tax, housing_fund, civil_affairs]
      court.yaml           connector: court …   (see `connectors.config`)
      tax.yaml             …

Every `<connector>.yaml` in the folder is a connector of the deployment, and its file name
is its id. `roster.yaml` (optional) only fixes the order in which connectors are started
and published; configurations it does not list follow, in file-name order. Adding an
agency is adding its file: nothing else names the connectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connectors.config import ConnectorConfig
from xiezhi.errors import InvalidInput

ORDER_FILE = "roster.yaml"


@dataclass(frozen=True)
class RosterEntry:
    path: Path
    config: ConnectorConfig

    @property
    def name(self) -> str:
        return self.config.connector


@dataclass(frozen=True)
class Roster:
    folder: Path
    entries: tuple[RosterEntry, ...]

    @classmethod
    def load(cls, folder: Path) -> Roster:
        """Read every connector configuration in `folder`. Raises InvalidInput naming the file
        and field at fault, for an empty folder too."""
        paths = {p.stem: p for p in sorted(folder.glob("*.yaml")) if p.name != ORDER_FILE}
        if not paths:
            raise InvalidInput(f"{folder}: no connector configurations (<connector>.yaml)")
        order = _order(folder / ORDER_FILE, paths)
        entries = tuple(RosterEntry(paths[name], ConnectorConfig.from_file(paths[name])) for name in order)
        for entry in entries:
            if entry.name != entry.path.stem:
                raise InvalidInput(f"{entry.path.name}: connector {entry.name!r} must be in {entry.name}.yaml")
        return cls(folder, entries)

    def __iter__(self) -> Iterator[RosterEntry]:
        return iter(self.entries)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def entry(self, name: str) -> RosterEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise InvalidInput(f"connector {name!r} is not in the roster {self.folder}")

    def path(self, name: str) -> Path:
        """The configuration file of connector `name`."""
        return self.entry(name).path


def _order(order_file: Path, paths: dict[str, Path]) -> list[str]:
    if not order_file.is_file():
        return list(paths)
    raw: Any = yaml.safe_load(order_file.read_text(encoding="utf-8"))
    listed = raw.get("order") if isinstance(raw, dict) else None
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise InvalidInput(f"{order_file.name}: expected 'order: [connector, …]'")
    missing = [name for name in listed if name not in paths]
    if missing:
        raise InvalidInput(f"{order_file.name}: no configuration file for {', '.join(missing)}")
    if len(set(listed)) != len(listed):
        raise InvalidInput(f"{order_file.name}: a connector is listed twice")
    return listed + [name for name in paths if name not in listed]
