"""The security auditor's commands, `xiezhi audit`: verify a log (live database or export), export it, check proofs.

Verification needs a trust anchor: the log's verifier key, from `--log-key` or from the
gateway's settings (`--settings`, which also names the witnesses). Nothing read from the
log being checked is trusted to say which key signed it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import create_engine

from audit_log.export import DatabaseSource, write_export
from audit_log.merkle import ProofFailed, leaf_hash, verify_consistency, verify_inclusion
from audit_log.note import NoteError, Verifier, load_signer, open_checkpoint, parse_witnesses, read_verifier
from audit_log.store import AuditLog
from audit_log.verify import ExportSource, Report, Source, verify
from audit_log.witness_policy import HeldCheckpoint, WitnessPolicy, read_held
from cli.common import GatewayUrl, error, fail, gateway_client
from requester.gateway_client import GatewayClient
from xiezhi.errors import XiezhiError

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

audit_app = typer.Typer(help="The audit log: verify it, export it, check proofs.", no_args_is_help=True)
proof_app = typer.Typer(help="Inclusion and consistency proofs from a gateway, checked here.", no_args_is_help=True)
audit_app.add_typer(proof_app, name="proof")

SettingsOption = Annotated[
    Path | None, typer.Option("--settings", help="The gateway's settings file: database, log key and witnesses")
]
LogKeyOption = Annotated[str | None, typer.Option(help="The log's verifier key (name+id+key) or a file holding it")]
WitnessOption = Annotated[
    list[str] | None,
    typer.Option("--witness", help="NAME=VKEY (or NAME=FILE) of a witness whose cosignatures to check"),
]
TokenFileOption = Annotated[
    Path | None, typer.Option(help="File holding an auditor's bearer token (default: $XIEZHI_TOKEN)")
]


def _settings(path: Path | None) -> GatewaySettings | None:
    if path is None:
        return None
    from gateway.settings import GatewaySettings

    try:
        return GatewaySettings.from_file(path)
    except (XiezhiError, ValueError, OSError) as exc:
        raise error(f"{path}: {exc}") from None


def _trust(
    settings: GatewaySettings | None, log_key: str | None, witness: list[str] | None
) -> tuple[Verifier, dict[str, Verifier]]:
    witnesses: dict[str, str] = {}
    key: Verifier | None = None
    try:
        if settings is not None:
            key = load_signer(settings.audit.signing_key).verifier()
            witnesses.update(settings.audit.witnesses)
        for item in witness or []:
            name, sep, vkey = item.partition("=")
            if not sep:
                raise error(f"--witness {item!r}: expected NAME=VKEY")
            witnesses[name] = vkey
        if log_key is not None:
            key = read_verifier(log_key)
        if key is None:
            raise error("name the log's key: --log-key VKEY (or a file), or --settings gateway.yaml")
        return key, parse_witnesses(witnesses)
    except (XiezhiError, ValueError) as exc:
        raise error(str(exc)) from None


def _database_url(source: str) -> str:
    if "://" in source:
        return source
    path = Path(source).resolve()
    if not path.is_file():
        raise error(f"{source}: no such export folder or database file")
    return f"sqlite:///file:{path}?mode=ro&uri=true"  # never write to the database being checked


def _open(source: str | None, settings: GatewaySettings | None) -> Source:
    if source is None:
        if settings is None:
            raise error("give a SOURCE (export folder, database file or URL) or --settings")
        source = settings.database_url
    if Path(source).is_dir():
        try:
            return ExportSource(Path(source))
        except FileNotFoundError as exc:
            raise error(str(exc)) from None
    try:
        return DatabaseSource(AuditLog.existing(create_engine(_database_url(source))))
    except LookupError as exc:
        raise error(f"{source}: {exc}") from None


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
        return
    cosigned = ", ".join(f"{name} {count}" for name, count in sorted(report.cosigned.items())) or "none"
    counted = f"entries: {report.entries}   " if report.ok else ""
    typer.echo(f"{counted}checkpoints: {report.checkpoints} (latest {report.latest_checkpoint})   cosigned: {cosigned}")
    if report.ok:
        typer.echo("OK: every entry is in place and every checkpoint verifies")
        return
    typer.echo(
        f"TAMPERED: first bad entry at position {report.first_bad}" if report.first_bad is not None else "TAMPERED"
    )
    for problem in report.problems:
        typer.echo(f"  {problem}")


PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="A witness policy file (YAML: witnesses, quorum, max_uncosigned_checkpoints, max_unsigned_seconds, "
        "checkpoints); it replaces the witnesses of --settings",
    ),
]
HeldOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoints",
        help="Checkpoints kept outside the log (JSON lines with a note each, or one note): the witnesses' "
        "(`xiezhi audit witness-checkpoints`) or the gateway's published ones. The log must extend every one",
    ),
]
WitnessUrlOption = Annotated[
    list[str] | None,
    typer.Option("--witness-url", help="NAME=URL of a witness to read (default: the connectors' URLs in --settings)"),
]


@audit_app.command("verify")
def verify_command(
    source: Annotated[
        str | None, typer.Argument(help="An export folder, a SQLite database file, or a database URL")
    ] = None,
    settings: SettingsOption = None,
    log_key: LogKeyOption = None,
    witness: WitnessOption = None,
    policy_file: PolicyOption = None,
    quorum: Annotated[
        int | None, typer.Option(min=0, help="How many witnesses must cosign (default: 1 when witnesses are named)")
    ] = None,
    held_files: HeldOption = None,
    from_witnesses: Annotated[
        bool,
        typer.Option(
            "--from-witnesses",
            help="Also read each witness's newest cosigned checkpoint from the witness itself (mutual TLS with "
            "$XIEZHI_TLS_*) and hold the log to it",
        ),
    ] = False,
    witness_url: WitnessUrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes hashing whole chunks of a large log (default: one per core)")
    ] = os.cpu_count() or 1,
) -> None:
    """Recompute the tree, check every checkpoint and cosignature, name the first bad entry,
    and hold the log to its witnesses: to what each cosigned, and to their quorum.

    Exit status 0 if the log verifies, 1 if it does not, 2 if it could not be checked.
    """
    loaded = _settings(settings)
    key, witnesses = _trust(loaded, log_key, witness)
    try:
        policy = _policy(loaded, witnesses, policy_file, quorum, held_files or [])
        if from_witnesses:
            policy = replace(policy, held=(*policy.held, *_read_witnesses(loaded, witness_url, policy)))
        report = verify(_open(source, loaded), key, workers=workers, policy=policy)
    except NoteError as exc:
        raise error(str(exc)) from None
    except XiezhiError as exc:
        raise fail(exc) from None
    _print(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("witness-checkpoints")
def witness_checkpoints_command(
    out: Annotated[Path, typer.Option(help="File to write (JSON lines: source, size, note)")],
    settings: SettingsOption = None,
    witness: WitnessOption = None,
    witness_url: WitnessUrlOption = None,
    log_key: LogKeyOption = None,
) -> None:
    """Read each witness's newest cosigned checkpoint and keep them in a file, for
    `xiezhi audit verify --checkpoints FILE` on any later copy of the log."""
    loaded = _settings(settings)
    key, witnesses = _trust(loaded, log_key, witness)
    policy = WitnessPolicy(witnesses=witnesses)
    try:
        held = _read_witnesses(loaded, witness_url, policy)
        lines = []
        for item in held:
            checkpoint = open_checkpoint(item.note, key)  # refuse to keep what the log did not sign
            lines.append(json.dumps({"source": item.source, "size": checkpoint.size, "note": item.note}) + "\n")
    except XiezhiError as exc:
        raise fail(exc) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines), encoding="utf-8")
    typer.echo(f"kept {len(lines)} witnesses' cosigned checkpoints in {out}")


def _policy(
    settings: GatewaySettings | None,
    witnesses: dict[str, Verifier],
    policy_file: Path | None,
    quorum: int | None,
    held_files: list[Path],
) -> WitnessPolicy:
    """The witness policy: a policy file, else the witnesses named (quorum 1 when there are any)."""
    if policy_file is not None:
        policy = WitnessPolicy.load(policy_file)
    else:
        audit = settings.audit if settings is not None else None
        policy = WitnessPolicy(
            witnesses=witnesses,
            quorum=(audit.witness_quorum if audit is not None else None) or (1 if witnesses else 0),
            max_unsigned_seconds=(audit.checkpoint_every_seconds + 60.0) if audit is not None else 70.0,
        )
    held = [item for path in held_files for item in read_held(path)]
    return replace(policy, quorum=policy.quorum if quorum is None else quorum, held=(*policy.held, *held))


def _read_witnesses(
    settings: GatewaySettings | None, witness_url: list[str] | None, policy: WitnessPolicy
) -> list[HeldCheckpoint]:
    """Each policy witness's newest cosigned checkpoint, read from the witness over mutual TLS."""
    from requester.witness_reader import read_witness_checkpoint
    from xiezhi.tls import TRUST_DOMAIN, client_tls_from_env, insecure_http_from_env

    urls = {name: str(url) for name, url in (settings.connectors.items() if settings is not None else ())}
    for item in witness_url or []:
        name, sep, url = item.partition("=")
        if not sep:
            raise error(f"--witness-url {item!r}: expected NAME=URL")
        urls[name] = url
    missing = sorted(set(policy.witnesses) - set(urls))
    if missing:
        raise error(f"no URL for witness {', '.join(missing)}: give --witness-url NAME=URL or --settings")
    domain = settings.tls.domain if settings is not None and settings.tls is not None else TRUST_DOMAIN
    tls, insecure = client_tls_from_env(), insecure_http_from_env()
    return [
        HeldCheckpoint(
            read_witness_checkpoint(name, urls[name], tls=tls, domain=domain, insecure_http=insecure),
            f"witness {name}",
        )
        for name in sorted(policy.witnesses)
    ]


@audit_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option(help="Folder to write entries.jsonl and checkpoints.jsonl into")],
    gateway: Annotated[str | None, typer.Option(help="Gateway base URL (export over the API, as an auditor)")] = None,
    token_file: TokenFileOption = None,
    database: Annotated[str | None, typer.Option(help="Or read a database file or URL directly")] = None,
    size: Annotated[int | None, typer.Option(help="Tree size to export (default: the latest checkpoint)")] = None,
) -> None:
    """Write an export that `xiezhi audit verify` checks offline."""
    if (gateway is None) == (database is None):
        raise error("give exactly one of --gateway or --database")
    if database is not None:
        log = AuditLog.existing(create_engine(_database_url(database)))
        entries, checkpoints = write_export(log, out, size)
    else:
        client = gateway_client(gateway or "", token_file)
        out.mkdir(parents=True, exist_ok=True)
        try:
            with (out / "entries.jsonl").open("wb") as handle:
                entries = client.audit_export(handle, size)
            with (out / "checkpoints.jsonl").open("w", encoding="utf-8") as handle:
                kept = [c for c in client.audit_checkpoints() if c.size <= entries]
                for c in kept:
                    handle.write(
                        json.dumps({"size": c.size, "root": c.root, "note": c.note}, ensure_ascii=False) + "\n"
                    )
            checkpoints = len(kept)
        except XiezhiError as exc:
            raise error(f"({exc.code}) {exc.public_message}") from None
        finally:
            client.close()
    typer.echo(f"exported {entries} entries and {checkpoints} checkpoints to {out}")


@contextmanager
def _checking(gateway: str, token_file: Path | None, log_key: str | None) -> Iterator[tuple[GatewayClient, Verifier]]:
    """A client and the log key to check against; a failed check exits with status 1."""
    client = gateway_client(gateway, token_file)
    try:
        if log_key is not None:
            key = read_verifier(log_key)
        else:
            typer.echo("warning: no --log-key given; trusting the key the gateway itself reports", err=True)
            key = Verifier.parse(client.audit_log_key().log_key)
        yield client, key
    except XiezhiError as exc:  # NoteError and ProofFailed among them
        typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


@proof_app.command("inclusion")
def inclusion_command(
    gateway: GatewayUrl,
    seq: Annotated[int, typer.Option(help="The entry's position (leaf index)")],
    size: Annotated[int | None, typer.Option(help="A checkpointed tree size (default: the latest)")] = None,
    token_file: TokenFileOption = None,
    log_key: LogKeyOption = None,
) -> None:
    """Fetch entry SEQ and its inclusion proof, and check both against the signed checkpoint."""
    with _checking(gateway, token_file, log_key) as (client, key):
        proof = client.audit_inclusion(seq, size)
        entry = client.audit_entry_text(seq).encode()
        checkpoint = open_checkpoint(proof.checkpoint, key)
        leaf = leaf_hash(entry)
        if base64.b64encode(leaf).decode() != proof.leaf_hash:
            raise ProofFailed("the entry's bytes do not hash to the leaf hash the gateway gave")
        verify_inclusion(seq, checkpoint.size, leaf, [base64.b64decode(h) for h in proof.proof], checkpoint.root)
    typer.echo(f"OK: entry {seq} is included in the checkpoint of size {checkpoint.size} signed by {key.name}")


@proof_app.command("consistency")
def consistency_command(
    gateway: GatewayUrl,
    first: Annotated[int, typer.Option(help="The earlier checkpointed size")],
    second: Annotated[int, typer.Option(help="The later checkpointed size")],
    token_file: TokenFileOption = None,
    log_key: LogKeyOption = None,
) -> None:
    """Check that the checkpoint of size SECOND extends the checkpoint of size FIRST."""
    with _checking(gateway, token_file, log_key) as (client, key):
        old = open_checkpoint(client.audit_checkpoint(first).note, key)
        new = open_checkpoint(client.audit_checkpoint(second).note, key)
        proof = client.audit_consistency(first, second)
        verify_consistency(old.size, new.size, old.root, new.root, [base64.b64decode(h) for h in proof.proof])
    typer.echo(f"OK: the checkpoint of size {second} extends the one of size {first} (both signed by {key.name})")
