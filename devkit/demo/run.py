"""`xiezhi demo`: the whole system on one machine, on loopback, over generated or given data.

1. generate agency databases and the procuratorate's lists (or take them from --data);
2. create development keys and the gateway's configuration under the work folder;
3. start the gateway and the roster's connectors (deploy/connectors/) as real HTTP services;
4. build every connector's capability indexes and publish them;
5. run every supervision model as a district prosecutor; a run that needs approval (over
   the batch limit, or a tier-3 capability such as marriage records) waits until the
   district's department head approves it, then goes on; write reports/<model>.csv;
6. print a summary: subjects, clues and approvals per model, time per phase.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine

from audit_log.export import DatabaseSource
from audit_log.note import Verifier, parse_witnesses
from audit_log.store import AuditLog
from audit_log.verify import Report, verify
from audit_log.witness_policy import WitnessPolicy, read_held
from connectors.roster import Roster
from connectors.runner import PublishReport, build_and_publish
from devkit.demo.generate import generate
from devkit.demo.services import Services, free_port
from devkit.environment import DevEnvironment, ensure_pki, init_dev, issue_token, load_roster, witness_key
from devkit.pki import DevPki
from gateway.settings import GatewaySettings
from requester.gateway_client import GatewayClient
from requester.job import MatchSummary, match_file
from requester.protocol import MatchSpec
from xiezhi.errors import InvalidInput
from xiezhi.supervision import ModelCatalog, SubjectKind
from xiezhi.telemetry import Telemetry, TelemetrySettings
from xiezhi.tls import TLSFiles

DEMO_ORG = "330803"  # 衢州市衢江区人民检察院
DEMO_PURPOSE = "（2025）浙0803执监15号"  # the supervision case the runs serve
DEMO_LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"
DEMO_PROSECUTOR = f"prosecutor-{DEMO_ORG}-01"
DEMO_APPROVER = f"dept-head-{DEMO_ORG}-01"


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def run_demo(
    *,
    workdir: Path,
    seed: int = 7,
    data: Path | None = None,
    debtors: int = 1200,
    roster: Path | None = None,
    policies: Path | None = None,
    console: Console | None = None,
) -> list[MatchSummary]:
    """Run the demo in `workdir` over the connectors of `roster` (default: deploy/connectors)
    under the policy folder `policies` (default: policies/, models in its models/)."""
    # Wide enough for the summary tables when output is a file or a pipe (make demo | tee).
    console = console or Console(width=None if Console().is_terminal else 110)
    workdir = workdir.resolve()
    phases = Phases()
    connectors = load_roster(roster)
    data_dir = _data(workdir, data, seed, debtors, connectors, phases)
    with ExitStack() as running:
        with phases.phase("start services"):
            dev, gateway_url = running.enter_context(deployment(workdir, connectors, policies))
        with phases.phase("build and publish indexes"):
            published = [
                publish_connector(dev, workdir, data_dir, connectors, c, gateway_url, show_progress=console.is_terminal)
                for c in connectors.names()
            ]
        with requester_telemetry(workdir):
            summaries, approved = _run_models(
                dev, data_dir, workdir, gateway_url, phases, show_progress=console.is_terminal
            )
    # The services have stopped: the gateway signed a last checkpoint of everything it logged.
    with phases.phase("verify the audit log"):
        audit = _verify_audit(dev)
    _print_summary(console, workdir, published, summaries, approved, phases)
    _print_audit(console, dev, audit)
    return summaries


def telemetry_file(workdir: Path, service: str) -> Path:
    """Where the demo's `service` (gateway, a connector, requester) writes its redacted telemetry."""
    return workdir / "telemetry" / f"{service}.jsonl"


@contextmanager
def requester_telemetry(workdir: Path) -> Iterator[None]:
    """The requester's own spans (each model run and its calls to the gateway) and metrics."""
    settings = TelemetrySettings(exporter="file", path=telemetry_file(workdir, "requester"))
    telemetry = Telemetry(settings, "xiezhi-requester")
    try:
        with telemetry.activate():
            yield
    finally:
        telemetry.shutdown()


def _verify_audit(dev: DevEnvironment) -> Report:
    settings = GatewaySettings.from_file(dev.gateway_config)
    engine = create_engine(settings.database_url)
    witnesses = parse_witnesses(settings.audit.witnesses)
    published = _published(settings)
    policy = WitnessPolicy(
        witnesses=witnesses,
        quorum=1 if witnesses else 0,
        held=tuple(read_held(published)) if published.is_file() else (),
    )
    try:
        return verify(DatabaseSource(AuditLog.existing(engine)), Verifier.parse(dev.audit_vkey), policy=policy)
    finally:
        engine.dispose()


def _published(settings: GatewaySettings) -> Path:
    folder = settings.audit.publish_dir or Path("published")
    return folder / "checkpoints.jsonl"


def _print_audit(console: Console, dev: DevEnvironment, report: Report) -> None:
    cosigned = ", ".join(f"{name.rsplit('/', 1)[-1]} {count}" for name, count in sorted(report.cosigned.items()))
    verdict = "[green]verified[/green]" if report.ok else f"[red]NOT verified: {report.problems[0]}[/red]"
    console.print(
        f"Audit log: {report.entries} entries, {report.checkpoints} signed "
        f"checkpoint{'' if report.checkpoints == 1 else 's'} "
        f"(cosigned: {cosigned or 'none'}) — {verdict}"
    )
    published = _published(GatewaySettings.from_file(dev.gateway_config))
    console.print(f"Check it yourself: xiezhi audit verify --settings {dev.gateway_config} --checkpoints {published}")


@contextmanager
def deployment(workdir: Path, roster: Roster, policy_dir: Path | None = None) -> Iterator[tuple[DevEnvironment, str]]:
    """Start an empty gateway and the roster's connectors for `workdir` on free loopback ports.

    `policy_dir` replaces the repository's `policies/` (the benches raise its quotas).
    Yields the development environment and the gateway's URL; stops every service on exit.
    """
    gateway_db = workdir / "gateway" / "gateway.sqlite"
    for stale in gateway_db.parent.glob("gateway.sqlite*"):
        stale.unlink()  # each run starts from an empty gateway, and so a new audit log
    for stale in (workdir / "telemetry").glob("*.jsonl"):
        stale.unlink()  # … and new telemetry files
    for stale in (workdir / "reports").glob("*.csv"):
        stale.unlink()  # … and reports of this run only (a report names a request of the old log)
    names = roster.names()
    witnesses = {}
    for connector in names:
        keys = workdir / "connectors" / connector / "keys"
        (keys / "witness-state.json").unlink(missing_ok=True)  # what it witnessed of the old log
        witnesses[connector] = witness_key(keys, connector)[1]
    ports = {name: free_port() for name in ("gateway", *names)}
    dev = init_dev(
        workdir,
        connectors={c: f"https://127.0.0.1:{ports[c]}" for c in names},
        database_url=f"sqlite:///{gateway_db}",
        policy_dir=policy_dir,
        witnesses=witnesses,
        pki=ensure_pki(workdir / "pki", names),
        # Metrics every few seconds, not only at shutdown: the demo's run is short.
        telemetry={"exporter": "file", "path": str(telemetry_file(workdir, "gateway")), "metric_interval_seconds": 5},
    )
    with Services() as services:
        start_all(services, dev, workdir, names, ports)
        yield dev, f"https://127.0.0.1:{ports['gateway']}"


def _data(workdir: Path, data: Path | None, seed: int, debtors: int, roster: Roster, phases: Phases) -> Path:
    if data is None:
        with phases.phase("generate data"):
            generate(workdir, seed=seed, debtors=debtors, roster=roster)
        return workdir
    data = data.resolve()
    needed = [data / "agencies" / f"{c}.sqlite" for c in roster.names()]
    needed += [data / "subjects.csv", data / "applicants.csv"]
    missing = [str(p.relative_to(data)) for p in needed if not p.is_file()]
    if missing:
        raise InvalidInput(f"--data {data}: missing {', '.join(missing)}")
    return data


def start_all(
    services: Services, dev: DevEnvironment, workdir: Path, connectors: list[str], ports: dict[str, int]
) -> None:
    """Start the connectors, then the gateway, each as a process on its loopback port,
    all over mutual TLS with certificates from the demo's PKI. Each connector reads the
    gateway's ticket keys from its JWKS URL when the first ticket arrives."""
    pki = _pki(dev)
    jwks_url = f"https://127.0.0.1:{ports['gateway']}/.well-known/jwks.json"
    for connector in connectors:
        state = workdir / "connectors" / connector
        files = pki.connector(connector)
        args = [
            "connector", "serve", "--connector", connector, "--key-dir", str(state / "keys"),
            "--ticket-jwks-url", jwks_url, "--witness-key", str(state / "keys" / "witness.key"),
            "--log-key", dev.audit_vkey, "--port", str(ports[connector]),
            "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
            "--telemetry", f"file:{telemetry_file(workdir, connector)}",
        ]  # fmt: skip
        services.start(
            connector,
            args,
            state / "connector.log",
            f"https://127.0.0.1:{ports[connector]}/healthz",
            pki.gateway(),  # a connector answers the gateway only
        )
    services.start(
        "gateway",
        ["gateway", "serve", "--config", str(dev.gateway_config), "--port", str(ports["gateway"])],
        workdir / "gateway" / "gateway.log",
        f"https://127.0.0.1:{ports['gateway']}/healthz",
        pki.client("requester"),
    )


def _pki(dev: DevEnvironment) -> DevPki:
    if dev.pki is None:
        raise InvalidInput("the demo runs over mutual TLS and needs the development PKI")
    return dev.pki


def publish_connector(
    dev: DevEnvironment,
    workdir: Path,
    data_dir: Path,
    roster: Roster,
    connector: str,
    gateway_url: str,
    *,
    show_progress: bool = True,
) -> PublishReport:
    """Build `connector`'s indexes from `data_dir/agencies/<connector>.sqlite` and publish them."""
    token = issue_token(dev.idp_key, subject=f"connector:{connector}", roles=["connector"], connector=connector)
    return build_and_publish(
        roster.path(connector),
        workdir / "connectors" / connector / "keys",
        gateway_url,
        token,
        database_url=f"sqlite:///{data_dir / 'agencies' / f'{connector}.sqlite'}",
        show_progress=show_progress,
        tls=_pki(dev).connector(connector),
    )


def _run_models(
    dev: DevEnvironment, data_dir: Path, workdir: Path, gateway_url: str, phases: Phases, *, show_progress: bool
) -> tuple[list[MatchSummary], dict[str, tuple[str, ...]]]:
    token = issue_token(dev.idp_key, subject=DEMO_PROSECUTOR, roles=["prosecutor"], org=DEMO_ORG, clearance=3)
    requester = _pki(dev).client("requester")
    approver = Approver(
        gateway_url, issue_token(dev.idp_key, subject=DEMO_APPROVER, roles=["dept_head"], org=DEMO_ORG), requester
    )
    summaries = []
    for model in ModelCatalog.load(dev.models_dir):
        subjects = data_dir / ("applicants.csv" if model.subjects is SubjectKind.APPLICANTS else "subjects.csv")
        with phases.phase(f"model {model.id}"):
            summaries.append(
                match_file(
                    gateway_url,
                    token,
                    MatchSpec(model.id, DEMO_PURPOSE, DEMO_LEGAL_BASIS),
                    subjects,
                    workdir / "reports" / f"{model.id}.csv",
                    show_progress=show_progress,
                    on_pending=approver,
                    tls=requester,
                )
            )
    approver.close()
    return summaries, approver.approved


class Approver:
    """The department head's side of the demo: approve each waiting request, with a reason."""

    def __init__(self, gateway_url: str, token: str, tls: TLSFiles) -> None:
        self._client = GatewayClient(gateway_url, token, tls=tls)
        self.approved: dict[str, tuple[str, ...]] = {}  # model → the reasons it needed approval

    def __call__(self, request_id: str) -> None:
        view = self._client.decide(request_id, approve=True, reason="同意：终本案件财产线索核查，依法监督")
        self.approved[view.model] = view.reasons

    def close(self) -> None:
        self._client.close()


def _print_summary(
    console: Console,
    workdir: Path,
    published: list[PublishReport],
    summaries: list[MatchSummary],
    approved: dict[str, tuple[str, ...]],
    phases: Phases,
) -> None:
    indexes = Table(title="Indexes published (counts only)")
    for column in ("capability", "rows", "invalid IDs", "tokens"):
        indexes.add_column(column, justify="right" if column != "capability" else "left")
    for report in published:
        for index in report.built.capabilities:
            indexes.add_row(index.capability.id, str(index.rows), str(index.invalid_rows), str(index.tokens))
    models = Table(title="Supervision models run")
    for column in ("model", "subjects", "valid rows", "invalid rows", "clues", "approved (why needed)", "seconds"):
        models.add_column(
            column, justify="right" if column in ("valid rows", "invalid rows", "clues", "seconds") else "left"
        )
    for s in summaries:
        models.add_row(
            s.model,
            s.subjects.name,
            str(s.rows),
            str(s.invalid_rows),
            str(s.clues),
            ", ".join(approved.get(s.model, ())) or "-",
            f"{phases.seconds[f'model {s.model}']:.1f}",
        )
    timing = Table(title="Time per phase")
    timing.add_column("phase")
    timing.add_column("seconds", justify="right")
    for name, seconds in phases.seconds.items():
        timing.add_row(name, f"{seconds:.1f}")
    console.print(indexes, models, timing)
    console.print(f"Reports: {workdir / 'reports'}/<model>.csv (invalid rows in <model>.csv.errors.csv)")
    console.print(f"Gateway database and logs: {workdir / 'gateway'}")
    console.print(f"Every link ran over mutual TLS with the development PKI in {workdir / 'pki'}")
    console.print(f"Telemetry (traces, metrics, logs; redacted): {workdir / 'telemetry'}/<service>.jsonl")
