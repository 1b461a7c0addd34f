"""Several gateway instances on one PostgreSQL database, as behind a load balancer.

Each instance is a real gateway app served over mutual TLS on loopback, connected as the
application's role to a database the migration role made. What one instance does, the
others see: the first start's seeding (ticket keys, the token-sighting key) is made once when
two instances start at the same moment; a request started on one instance, whose instance
then dies, is finished on another with the report equal to the plain SQL join; a ticket-key
rotation, a key-encryption-key rotation and a connector's new key epoch reach every instance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from devkit.environment import REPO_ROOT, init_dev
from gateway.app import create_app
from gateway.db import make_engine
from gateway.settings import GatewaySettings
from requester.gateway_client import NO_RETRIES, GatewayClient
from requester.job import match_file
from requester.protocol import MatchSpec, run_match
from requester.subjects import load_subjects
from tests.agreement import assert_report_agrees, subjects_file
from tests.stack import (
    HTTP,
    LEGAL_BASIS,
    PURPOSE,
    Clock,
    LoopbackServer,
    Stack,
    client_for,
    run_cli,
    session_pki,
    start_stack,
)
from tests.test_migrations import Roles, two_roles
from xiezhi.errors import XiezhiError
from xiezhi.jwks import parse_jwks
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import KeyRotation

pytestmark = pytest.mark.integration

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")


def migrated(postgres: str, root: Path) -> tuple[Roles, Path]:
    """A database made by `xiezhi gateway migrate` as its owner; settings naming the app's role."""
    roles = two_roles(postgres)
    dev = init_dev(root, connectors={}, database_url=roles.app_url, pki=session_pki())
    done = run_cli("gateway", "migrate", "--config", str(dev.gateway_config), "--database-url", roles.owner_url)
    assert done.returncode == 0, done.stderr
    return roles, dev.gateway_config


def test_two_instances_starting_at_once_seed_once(postgres: str, tmp_path: Path) -> None:
    roles, config = migrated(postgres, tmp_path)
    settings = GatewaySettings.from_file(config)
    start = threading.Barrier(2)
    servers: list[LoopbackServer] = []
    failures: list[BaseException] = []

    def first_start() -> None:
        try:
            app = create_app(settings)
            start.wait()
            servers.append(LoopbackServer(app, settings.tls).start())
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=first_start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not failures and len(servers) == 2
        sets = [HTTP.get(f"{server.url}/.well-known/jwks.json").json() for server in servers]
        assert sets[0] == sets[1] and len(parse_jwks(sets[0])) == 1  # one key, signed with by both
        engine = make_engine(roles.app_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM ticket_keys")).scalar_one() == 1
            names = connection.execute(text("SELECT name FROM gateway_secrets")).scalars().all()
        engine.dispose()
        assert names == ["token_sightings"]
    finally:
        for server in servers:
            server.stop()


class TwoGateways:
    def __init__(self, stack: Stack, second: LoopbackServer, clock: Clock, generated: Path, out: Path) -> None:
        self.stack, self.second, self.clock, self.generated, self.out = stack, second, clock, generated, out

    def client(self, url: str, roles: list[str], **kwargs: object) -> GatewayClient:
        """A user's client of the instance at `url` (no retries: a dead instance fails at once)."""
        token = self.stack.user_token(roles, **kwargs)  # type: ignore[arg-type]
        return GatewayClient(url, token, tls=session_pki().client(client_for(roles)), retry=NO_RETRIES)


@pytest.fixture(scope="module")
def two_gateways(postgres: str, generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoGateways]:
    root = tmp_path_factory.mktemp("two-gateways")
    roles, _ = migrated(postgres, root)
    clock = Clock(datetime.now(UTC))
    stack = start_stack(root, clock, database_url=roles.app_url)
    try:
        second = stack.start_gateway()
        stack.publish(generated)  # through the first instance
        yield TwoGateways(stack, second, clock, generated, tmp_path_factory.mktemp("reports"))
    finally:
        stack.stop()


@pytest.mark.xdist_group("two_gateways")
def test_rotations_and_new_epochs_reach_every_instance(two_gateways: TwoGateways) -> None:
    stack, second = two_gateways.stack, two_gateways.second
    # Ticket keys: rotated by the operator's command against the database; both instances
    # publish the new key and sign with it within their reload (1 s).
    rotated = run_cli("keys", "rotate-tickets", "--config", str(stack.dev.gateway_config))
    assert rotated.returncode == 0, rotated.stderr
    two_gateways.clock.advance(seconds=2)
    for url in (stack.gateway_url, second.url):
        served = list(parse_jwks(HTTP.get(f"{url}/.well-known/jwks.json").json()))
        assert served[0] == stack.gateway_ticket_key()[0] and len(served) == 2, url

    # The key-encryption key, rotated through the first instance: the second reports it.
    admin = {"subject": "security_admin-330000-01", "org": "330000"}
    rotated_status = two_gateways.client(stack.gateway_url, ["security_admin"], **admin).rotate_keys(
        KeyRotation(kek=True, data_key=True)
    )
    two_gateways.clock.advance(seconds=2)
    seen = two_gateways.client(second.url, ["security_admin"], **admin).key_status()
    assert (seen.kek, seen.data_key) == (rotated_status.kek, rotated_status.data_key)

    # A new key epoch for the court, published through the first instance: the second's
    # readiness names it, and a match through the second agrees with the reference join.
    stack.publish(two_gateways.generated, ("court",), rotate=True)
    ready = HTTP.get(f"{second.url}/readyz").json()
    assert ready["connectors"]["court"]["epoch"] == 2, ready
    model = CATALOG.get("litigated_claims")
    summary = match_file(
        second.url,
        stack.user_token(["prosecutor"]),
        MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=97),
        subjects_file(two_gateways.generated, model),
        two_gateways.out / "after-rotation.csv",
        show_progress=False,
        workers=1,
        on_pending=stack.approver(),
        tls=session_pki().client(client_for(["prosecutor"])),
    )
    assert assert_report_agrees(two_gateways.generated, model, summary.report, request_id=summary.request_id) > 0


@pytest.mark.xdist_group("two_gateways")
def test_a_request_started_on_a_dying_instance_finishes_on_another(two_gateways: TwoGateways) -> None:
    # An instance of its own, started for this test and killed half way; the run then goes on
    # at the stack's first instance (the one whose JWK Set the connectors read).
    stack, dying = two_gateways.stack, two_gateways.stack.start_gateway()
    model = CATALOG.get("asset_sweep")
    listed = subjects_file(two_gateways.generated, model)
    inputs = [row.subject.oprf_input() for row in load_subjects(listed).valid]
    done = 0

    def dies_half_way(n: int) -> None:
        nonlocal done
        done += n
        if done >= len(inputs) and dying in stack.servers:
            stack.stop_server(dying)  # after its first connector's batches, mid-run

    spec = MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=40)
    client = two_gateways.client(dying.url, ["prosecutor"])
    with pytest.raises(XiezhiError) as stopped:
        run_match(client, spec, inputs, advance=dies_half_way, workers=1, on_pending=stack.approver())
    request_id = stopped.value.extensions["request_id"]
    assert isinstance(request_id, str) and dying not in stack.servers

    summary = match_file(
        stack.gateway_url,
        stack.user_token(["prosecutor"]),
        MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=40, request_id=request_id),
        listed,
        two_gateways.out / "resumed.csv",
        show_progress=False,
        workers=1,
        tls=session_pki().client(client_for(["prosecutor"])),
    )
    assert summary.request_id == request_id
    assert assert_report_agrees(two_gateways.generated, model, summary.report, request_id=request_id) > 0
