"""The connector's OPRF keys, one per epoch, kept in files only the connector reads.

Keys never leave the connector: the gateway and requesters see public keys only.
"""

from __future__ import annotations

import re
from pathlib import Path

from xiezhi import oprf
from xiezhi.crypto import write_secret
from xiezhi.errors import Conflict, NotFound

_NAME = re.compile(r"^epoch-(\d{4,})\.key$")


class KeyStore:
    """Epoch keys in a folder: `epoch-0001.key`, `epoch-0002.key`, … (32 raw bytes, mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._cache: dict[int, oprf.KeyPair] = {}

    def epochs(self) -> list[int]:
        if not self._dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self._dir.iterdir() if (m := _NAME.match(p.name)))

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
        epoch = (self.epochs() or [0])[-1] + 1
        path = self._path(epoch)
        if path.exists():
            raise Conflict(f"epoch {epoch} already has a key")
        write_secret(path, oprf.generate_key_pair(oprf.Mode.VOPRF).sk)
        return epoch

    def key_pair(self, epoch: int) -> oprf.KeyPair:
        """The key pair of `epoch`; raises NotFound for an epoch this connector never had."""
        if epoch not in self._cache:
            path = self._path(epoch)
            if not path.is_file():
                raise NotFound(f"no key for epoch {epoch}", code="unknown_epoch")
            self._cache[epoch] = oprf.key_pair_from_secret(path.read_bytes())
        return self._cache[epoch]

    def _path(self, epoch: int) -> Path:
        return self._dir / f"epoch-{epoch:04d}.key"
