"""Evaluation engines (connectors/engines.py): results in order, chunks in flight bounded, the
local pool and a real Ray cluster building the same index byte for byte, clear errors.

The Ray tests start one local Ray head for the module (`ray start --head --block`, two CPUs,
every port chosen free, on loopback, in its own process group) and stop it at the end.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import connectors.runner
from cli.main import app
from connectors import indexer
from connectors.config import Capability, ConnectorConfig
from connectors.engines import LocalEngine, RayEngine, parse_address
from connectors.incremental import build_and_publish_incremental
from connectors.indexer import BuiltIndex, build, evaluate_chunks, evaluate_tokens
from connectors.publisher import TokenStream
from devkit.demo.generate import generate
from devkit.environment import load_roster
from tests.polling import wait_until
from tests.ray_cluster import RayCluster, ray_head
from xiezhi import oprf
from xiezhi.errors import InvalidInput, Unavailable
from xiezhi.parallel import PARALLEL_THRESHOLD
from xiezhi.wire import PublicationView

ROOT = Path(__file__).resolve().parent.parent
SECRET = bytes(range(32))
# `make test` distributes by group: the tests on the one Ray cluster run in one worker.
ON_THE_CLUSTER = pytest.mark.xdist_group("ray_cluster")


# Functions the engines run: module level, so a process pool or a Ray worker imports them.


def _first(shared: str, chunk: Sequence[int]) -> tuple[str, int, int]:
    return shared, chunk[0], os.getpid()


def _after_partner(folder: str, chunk: Sequence[int]) -> tuple[int, int]:
    """An odd chunk leaves a mark; an even chunk waits for the next (odd) chunk's mark, so an even
    chunk always finishes after its partner, in another worker process."""
    (number,) = chunk
    if number % 2:
        (Path(folder) / str(number)).touch()
    else:
        wait_until((Path(folder) / str(number + 1)).exists, f"chunk {number + 1} evaluated beside chunk {number}")
    return number, os.getpid()


def _fails(shared: str, chunk: Sequence[int]) -> None:
    raise ValueError(f"evaluation failed under {shared} for {chunk}")


# The local engine.


def test_results_come_in_order_with_at_most_in_flight_chunks_pulled() -> None:
    pulled = 0

    def chunks() -> Iterator[list[int]]:
        nonlocal pulled
        for number in range(50):
            pulled += 1
            yield [number]

    results = []
    for result in LocalEngine(workers=1, in_flight=3).map(_first, "shared", chunks()):
        results.append(result)
        assert pulled - len(results) < 3  # the chunk being consumed and two more, no others
    assert [number for _, number, _ in results] == list(range(50))
    assert {shared for shared, _, _ in results} == {"shared"}


def test_the_chunks_are_read_lazily() -> None:
    def endless() -> Iterator[list[int]]:
        number = 0
        while True:
            yield [number]
            number += 1

    results = LocalEngine(workers=1, in_flight=4).map(_first, "", endless())
    assert [next(results)[1] for _ in range(5)] == [0, 1, 2, 3, 4]


def test_in_flight_below_one_is_refused() -> None:
    with pytest.raises(InvalidInput, match="in_flight"):
        LocalEngine(in_flight=0)


def test_evaluate_chunks_reports_progress_and_matches_evaluate_tokens() -> None:
    items = [(f"xiezhi:v1:test:{n:04d}".encode(), ("a.one", "a.two") if n % 3 else ("a.one",)) for n in range(30)]
    sk = oprf.generate_key_pair(oprf.Mode.VOPRF).sk
    progress: list[int] = []
    by_chunks = list(
        evaluate_chunks(sk, [items[:7], items[7:20], items[20:]], advance=progress.append, engine=LocalEngine(1))
    )
    assert progress == [7, 13, 10]
    assert [pair for chunk in by_chunks for pair in chunk] == [
        pair for chunk in evaluate_tokens(sk, iter(items), workers=1) for pair in chunk
    ]


@pytest.mark.integration
def test_the_local_pool_keeps_order_across_processes() -> None:
    chunks = [list(range(number, number + 1_000)) for number in range(0, 12_000, 1_000)]
    assert sum(map(len, chunks)) >= PARALLEL_THRESHOLD  # large enough for the process pool
    results = list(LocalEngine(workers=2, in_flight=3).map(_first, "shared", iter(chunks)))
    assert [number for _, number, _ in results] == [chunk[0] for chunk in chunks]
    assert os.getpid() not in {pid for _, _, pid in results}


# Ray addresses and errors that need no cluster.


@pytest.mark.parametrize("address", ["auto", "ray://head.ray.svc:10001", "10.1.2.3:6379", "[::1]:6379", " head:6379 "])
def test_ray_addresses_in_the_forms_ray_accepts(address: str) -> None:
    assert parse_address(address) == address.strip()


@pytest.mark.parametrize("address", ["", "head", "http://head:8265", "ray://head", "head:0", "head:70000", "a b:1"])
def test_other_ray_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidInput, match="a Ray address is"):
        RayEngine(address)


def test_an_unreachable_cluster_is_named_without_the_key() -> None:
    with pytest.raises(Unavailable) as raised:
        next(RayEngine("127.0.0.1:1", connect_timeout=5).map(_first, SECRET.hex(), iter([[1]])))
    message = str(raised.value)
    assert message.startswith("the Ray cluster at 127.0.0.1:1 cannot be reached")
    assert SECRET.hex() not in message and raised.value.__cause__ is None


def test_ray_address_in_the_environment_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    with pytest.raises(InvalidInput, match="RAY_ADDRESS"):
        next(RayEngine("127.0.0.1:1").map(_first, "", iter([[1]])))


def test_ray_is_imported_only_inside_the_ray_engine() -> None:
    tree = ast.parse((ROOT / "connectors" / "engines.py").read_text(encoding="utf-8"))
    top_level = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert "ray" not in top_level


def test_publish_takes_the_ray_address_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_build_and_publish(*args: object, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise InvalidInput("stopped by the test")

    monkeypatch.setattr(connectors.runner, "build_and_publish", fake_build_and_publish)
    (tmp_path / "token").write_text("t")
    args = ["connector", "publish", "--config", "c.yaml", "--key-dir", str(tmp_path), "--gateway", "https://g"]
    args += ["--token-file", str(tmp_path / "token"), "--insecure-http"]
    result = CliRunner().invoke(app, args, env={"XIEZHI_RAY_ADDRESS": "ray://head:10001"})
    assert result.exit_code != 0 and "stopped by the test" in result.output
    assert isinstance(seen["engine"], RayEngine) and seen["engine"].address == "ray://head:10001"
    bad = CliRunner().invoke(app, [*args, "--ray-address", "http://head"])
    assert bad.exit_code != 0 and "a Ray address is" in bad.output


# A real Ray cluster.


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    with ray_head(cpus=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def housing_fund(tmp_path_factory: pytest.TempPathFactory) -> ConnectorConfig:
    """The housing-fund reference connector over generated data: more subjects than the pool's threshold."""
    root = tmp_path_factory.mktemp("data")
    generate(root, seed=7, debtors=10_000)
    (entry,) = [entry for entry in load_roster() if entry.name == "housing_fund"]
    return ConnectorConfig.from_file(entry.path, database_url=f"sqlite:///{root / 'agencies' / 'housing_fund.sqlite'}")


@pytest.fixture(scope="module")
def key() -> oprf.KeyPair:
    return oprf.generate_key_pair(oprf.Mode.VOPRF)


@pytest.fixture(scope="module")
def local_build(housing_fund: ConnectorConfig, key: oprf.KeyPair) -> BuiltIndex:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer, "CHUNK", 250)
        built = build(housing_fund, key, 1)  # the default: this machine's process pool
    assert built.subjects >= PARALLEL_THRESHOLD  # so the pool's processes did the work
    return built


def _assert_same_index(ray_built: BuiltIndex, local_built: BuiltIndex) -> None:
    assert [index.capability.id for index in ray_built.capabilities] == [
        index.capability.id for index in local_built.capabilities
    ]
    for on_ray, local in zip(ray_built.capabilities, local_built.capabilities, strict=True):
        assert len(on_ray.tokens) > 0
        assert on_ray.tokens == local.tokens  # byte for byte, in the same (sorted) order
        assert on_ray.digest == local.digest
    assert ray_built == local_built


@pytest.mark.integration
@ON_THE_CLUSTER
def test_two_ray_workers_run_chunks_and_results_keep_the_chunks_order(ray_cluster: RayCluster, tmp_path: Path) -> None:
    chunks = iter([[number] for number in range(8)])
    with closing(RayEngine(ray_cluster.address, in_flight=2)) as engine:
        results = list(engine.map(_after_partner, str(tmp_path), chunks))
    assert [number for number, _ in results] == list(range(8))
    workers = {pid for _, pid in results}
    assert len(workers) >= 2 and os.getpid() not in workers


@pytest.mark.integration
@ON_THE_CLUSTER
def test_a_build_on_ray_equals_the_local_build(
    ray_cluster: RayCluster, housing_fund: ConnectorConfig, key: oprf.KeyPair, local_build: BuiltIndex
) -> None:
    progress: list[int] = []

    def start(total: int) -> indexer.Progress:
        assert total == local_build.subjects
        return progress.append

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer, "CHUNK", 250)  # many chunks, a few in flight at a time
        with closing(RayEngine(ray_cluster.address, in_flight=3)) as engine:
            built = build(housing_fund, key, 1, progress=start, engine=engine)
            again = build(housing_fund, key, 1, engine=engine)  # a second run on the same connection
    _assert_same_index(built, local_build)
    _assert_same_index(again, local_build)
    assert len(progress) > 3 and sum(progress) == local_build.subjects


@pytest.mark.integration
@ON_THE_CLUSTER
def test_a_build_through_ray_client_equals_the_local_build(
    ray_cluster: RayCluster, housing_fund: ConnectorConfig, key: oprf.KeyPair, local_build: BuiltIndex
) -> None:
    with closing(RayEngine(ray_cluster.client)) as engine:
        built = build(housing_fund, key, 1, engine=engine)
    _assert_same_index(built, local_build)


@pytest.mark.integration
@ON_THE_CLUSTER
def test_a_failed_ray_task_is_named_by_type_only(ray_cluster: RayCluster) -> None:
    with pytest.raises(Unavailable) as raised:
        with closing(RayEngine(ray_cluster.address)) as engine:
            list(engine.map(_fails, SECRET.hex(), iter([[7]])))
    message = str(raised.value)
    assert message == f"a task on the Ray cluster at {ray_cluster.address} failed (ValueError)"
    assert raised.value.__cause__ is None and raised.value.__context__ is None


@pytest.mark.integration
@ON_THE_CLUSTER
def test_auto_finds_the_cluster_ray_address_names(ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    with closing(RayEngine("auto")) as engine:
        ((shared, number, pid),) = engine.map(_first, "shared", iter([[5]]))
    assert (shared, number) == ("shared", 5) and pid != os.getpid()


class SetsKept:
    """An in-memory gateway for the incremental build's first (whole-set) publication."""

    def __init__(self) -> None:
        self.sets: dict[str, bytes] = {}

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: Capability, tokens: TokenStream
    ) -> PublicationView:
        self.sets[capability.id] = b"".join(tokens.chunks())
        return PublicationView(
            publication_id=f"p-{capability.id}", connector=connector, capability=capability.id, epoch=epoch,
            token_count=tokens.count, received=tokens.count, committed=True,
        )  # fmt: skip

    def publish_delta(self, *args: object) -> PublicationView:
        raise AssertionError("a first build publishes whole sets")

    def publication(self, connector: str, publication_id: str) -> PublicationView:
        raise AssertionError("a first build reads no publication")

    def activate(self, connector: str, epoch: int) -> None:
        pass


@pytest.mark.integration
@ON_THE_CLUSTER
def test_the_incremental_build_on_ray_publishes_the_local_build_s_sets(
    ray_cluster: RayCluster, housing_fund: ConnectorConfig, key: oprf.KeyPair, tmp_path: Path
) -> None:
    on_ray, local = SetsKept(), SetsKept()
    with closing(RayEngine(ray_cluster.address)) as engine:
        report = build_and_publish_incremental(housing_fund, key, 1, tmp_path / "ray", on_ray, engine=engine)
    build_and_publish_incremental(housing_fund, key, 1, tmp_path / "local", local)
    assert report.subjects >= PARALLEL_THRESHOLD
    assert set(on_ray.sets) == {c.id for c in housing_fund.capabilities}
    assert on_ray.sets == local.sets and all(on_ray.sets.values())
