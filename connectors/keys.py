"""The connector's OPRF keys, one per epoch, kept in files only the connector reads.

Keys never leave the connector: the gateway and requesters see public keys only. An old
epoch's key stays until the operator retires it (`xiezhi connector retire-epoch`), once the
gateway no longer holds requests pinned to that epoch; a retired epoch leaves a marker so
its tickets are refused as retired rather than unknown, and its number is never reused.
"""

from __future__ import annotations

import re
from pathlib import Path

from xiezhi import oprf
from xiezhi.crypto import write_secret
from xiezhi.errors import Conflict, NotFound

_NAME = re.compile(r"^epoch-(\d{4,})\.key$")
_RETIRED = re.compile(r"^epoch-(\d{4,})\.retired$")


class KeyStore:
    """Epoch keys in a folder: `epoch-0001.key`, `epoch-0002.key`, … (32 raw bytes, mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._cache: dict[int, oprf.KeyPair] = {}

    def epochs(self) -> list[int]:
        """The epochs this connector holds a key for (retired ones excluded), oldest first."""
        return self._numbers(_NAME)

    def retired(self) -> list[int]:
        return self._numbers(_RETIRED)

    def current(self) -> int:
        """The newest epoch; raises NotFound if there is none yet."""
        epochs = self.epochs()
        if not epochs:
            raise NotFound("the connector has no OPRF key yet", code="no_key")
        return epochs[-1]

    def ensure(self) -> int:
        """The newest epoch, creating epoch 1 if the store is empty."""
        return self.current() if self.epochs() else self.rotate()

    def rotate(self) -> int:
        """Create the next epoch's key and return its number."""
        epoch = max([0, *self.epochs(), *self.retired()]) + 1
        path = self._path(epoch)
        if path.exists():
            raise Conflict(f"epoch {epoch} already has a key")
        write_secret(path, oprf.generate_key_pair(oprf.Mode.VOPRF).sk)
        return epoch

    def retire(self, epoch: int) -> None:
        """Delete `epoch`'s key for good. Refuses the newest epoch (Conflict: it serves new
        requests) and an epoch without a key (NotFound)."""
        epochs = self.epochs()
        if epoch not in epochs:
            raise NotFound(f"no key for epoch {epoch}", code="unknown_epoch")
        if epoch == epochs[-1]:
            raise Conflict(f"epoch {epoch} is the newest; rotate before retiring it", code="epoch_current")
        # The marker goes first: a crash between the two steps leaves the epoch refused.
        self._retired_path(epoch).touch()
        self._path(epoch).unlink()
        self._cache.pop(epoch, None)

    def key_pair(self, epoch: int) -> oprf.KeyPair:
        """The key pair of `epoch`; raises Conflict (`epoch_retired`) for a retired epoch — also
        one another process retired while this one had the key cached — and NotFound
        (`unknown_epoch`) for an epoch this connector never had."""
        if self._retired_path(epoch).exists():
            self._cache.pop(epoch, None)
            raise Conflict(f"epoch {epoch} was retired; no evaluation under it any more", code="epoch_retired")
        if epoch not in self._cache:
            path = self._path(epoch)
            if not path.is_file():
                raise NotFound(f"no key for epoch {epoch}", code="unknown_epoch")
            self._cache[epoch] = oprf.key_pair_from_secret(path.read_bytes())
        return self._cache[epoch]

    def _path(self, epoch: int) -> Path:
        return self._dir / f"epoch-{epoch:04d}.key"

    def _retired_path(self, epoch: int) -> Path:
        return self._dir / f"epoch-{epoch:04d}.retired"

    def _numbers(self, pattern: re.Pattern[str]) -> list[int]:
        if not self._dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self._dir.iterdir() if (m := pattern.match(p.name)))
