"""Key administration: status and rotation of the keys that seal stored data, without downtime.

`rotate` makes a new key-encryption key current (when the provider can rotate itself; a
KMS rotates its own) and a new data key wrapped under it, records a `key.rotation` entry
naming the key ids (never key material), and wakes the background `Rewrapper`. Old
ciphertexts keep opening throughout: they name the data key that sealed them, and every
data key stays stored, wrapped under some KEK the provider still holds. The rewrapper
moves data keys to the current KEK in batches and records one `key.rotation` entry
(`rewrap`) for each run that moved any. Only the security administrator may do either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from audit_log import EventKind
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.background import Periodic
from gateway.keyring import RotatableKeyProvider
from gateway.recorder import SYSTEM, Recorder
from gateway.sealing import Sealer
from xiezhi.errors import Conflict
from xiezhi.wire import KeyRotation, KeyStatus

OBJECT = "keys:gateway"


class Rewrapper:
    """Rewraps data keys under the current KEK in the background, every `every_seconds` or when woken."""

    def __init__(self, sealer: Sealer, batch: int, every_seconds: float, on_rewrapped: Callable[[int], None]) -> None:
        self._sealer, self._batch, self._on_rewrapped = sealer, batch, on_rewrapped
        self._periodic = Periodic("rewrap", every_seconds, self.run_once)

    def wake(self) -> None:
        self._periodic.wake()

    def close(self) -> None:
        self._periodic.close()

    def run_once(self) -> int:
        """Rewrap until nothing is left under an older KEK; return how many keys moved."""
        moved = 0
        while not self._periodic.stopping and (step := self._sealer.rewrap(self._batch)):
            moved += step
        if moved:
            self._on_rewrapped(moved)
        return moved


class KeyAdmin:
    def __init__(
        self,
        sealer: Sealer,
        authorizer: Authorizer,
        recorder: Recorder,
        clock: Callable[[], datetime],
        *,
        rewrap_batch: int,
        rewrap_every_seconds: float,
    ) -> None:
        self._sealer, self._authorizer, self._recorder, self._clock = sealer, authorizer, recorder, clock
        self._lock = threading.Lock()
        self.rewrapper = Rewrapper(sealer, rewrap_batch, rewrap_every_seconds, self._rewrapped)

    def status(self, principal: Principal) -> KeyStatus:
        self._authorize(principal, "read")
        return self._status()

    def rotate(self, principal: Principal, what: KeyRotation) -> KeyStatus:
        self._authorize(principal, "rotate")
        if not (what.kek or what.data_key):
            raise Conflict("nothing to rotate: ask for the kek, the data key or both", code="nothing_to_rotate")
        provider = self._sealer.provider
        if what.kek and not isinstance(provider, RotatableKeyProvider):
            raise Conflict(
                "this key provider rotates its keys itself (in the KMS or HSM); rotate the data key only",
                code="kek_rotated_by_provider",
            )
        with self._lock:
            previous_kek, previous_dek = provider.current_kek_id(), self._sealer.current_data_key_id()
            kek = provider.rotate(self._clock()) if what.kek and isinstance(provider, RotatableKeyProvider) else None
            dek = self._sealer.rotate_data_key() if what.data_key else None
            status = self._status()
            self._recorder.record_alone(
                principal,
                EventKind.KEY_ROTATION,
                "rotate",
                "ok",
                kek=kek,
                previous_kek=previous_kek if kek else None,
                data_key=dek,
                previous_data_key=previous_dek if dek else None,
                awaiting_rewrap=status.awaiting_rewrap,
            )
        self.rewrapper.wake()
        return status

    def close(self) -> None:
        self.rewrapper.close()

    def _status(self) -> KeyStatus:
        provider, store = self._sealer.provider, self._sealer.store
        kek = provider.current_kek_id()
        return KeyStatus(
            provider=type(provider).__name__,
            kek=kek,
            keks=tuple(provider.kek_ids()),
            data_key=self._sealer.current_data_key_id(),
            data_keys=store.count(),
            awaiting_rewrap=store.count(not_under=kek),
        )

    def _rewrapped(self, moved: int) -> None:
        kek = self._sealer.provider.current_kek_id()
        self._recorder.record_alone(SYSTEM, EventKind.KEY_ROTATION, "rewrap", "ok", rewrapped=moved, kek=kek)

    def _authorize(self, principal: Principal, action: str) -> None:
        self._recorder.enforce(principal, OBJECT, action, None, self._authorizer.decide(principal, OBJECT, action))
