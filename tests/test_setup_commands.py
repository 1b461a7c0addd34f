"""The README's "Running each service on its own", followed literally: its first code block is
read from README.md and run command by command as real processes on loopback (mutual TLS from
the development PKI it creates), so the README and this test cannot drift. It ends with every
configured witness's cosignature on the gateway's checkpoint and the auditor's verification
against all of them; then the set-up commands are run again and refuse to overwrite.

Only two things are translated: the `dev/` folder becomes the test's own, and the README's
ports (8000, 8101–8104) become free ones. `sleep` becomes polling GET /checkpoint until every
witness has cosigned.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from audit_log.note import cosignature_time, parse_witnesses
from devkit.environment import REPO_ROOT
from gateway.settings import GatewaySettings
from tests.polling import wait_until
from tests.stack import run_cli
from xiezhi.tls import TLSFiles, client_context

pytestmark = pytest.mark.integration

SECTION = "## Running each service on its own"
README_PORTS = ("8000", "8101", "8102", "8103", "8104")


def readme_commands(readme: Path = REPO_ROOT / "README.md") -> list[str]:
    """The shell commands of the section's first code block, continuation lines joined."""
    text = readme.read_text(encoding="utf-8")
    block = text[text.index(SECTION) :].split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Walkthrough:
    """The README's commands run in `folder` (its `dev/`), with the README's ports mapped to free ones."""

    folder: Path
    ports: dict[str, str] = field(default_factory=lambda: {p: str(_free_port()) for p in README_PORTS})
    env: dict[str, str] = field(
        default_factory=lambda: {k: v for k, v in os.environ.items() if not k.startswith("XIEZHI_TLS_")}
    )
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[BinaryIO] = field(default_factory=list)  # the services' stderr, for a failure's reader

    def translate(self, command: str) -> str:
        command = re.sub(r"(?<![\w.])dev/", f"{self.folder}/", command)
        return re.sub(r"\b(" + "|".join(README_PORTS) + r")\b", lambda m: self.ports[m.group(1)], command)

    def run(self, command: str) -> subprocess.CompletedProcess[str] | None:
        """One README line: `export`, `sleep` (polled for instead), a service (`&`) or a command."""
        words = shlex.split(self.translate(command))
        if words[0] == "export":
            self.env.update(word.partition("=")[::2] for word in words[1:])
            return None
        if words[0] == "sleep":
            self.wait_for_cosignatures()
            return None
        assert words[0] == "xiezhi", f"the README runs only xiezhi commands here, not {words[0]}"
        if words[-1] == "&":
            errors = (self.folder / f"service-{len(self.services)}.err").open("wb")
            self.logs.append(errors)
            self.services.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cli", *words[1:-1]],
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                )
            )
            return None
        result = run_cli(*words[1:], env=self.env)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def settings(self) -> GatewaySettings:
        return GatewaySettings.from_file(self.folder / "gateway" / "gateway.yaml")

    def checkpoint(self) -> str | None:
        files = TLSFiles(
            cert=self.folder / "pki" / "clients" / "auditor.pem",
            key=self.folder / "pki" / "clients" / "auditor.key",
            ca=self.folder / "pki" / "ca.pem",
        )
        for service in self.services:
            assert service.poll() is None, f"a service exited early: {service.args!r}"
        try:
            with httpx.Client(verify=client_context(files.ca, files), timeout=10.0) as client:
                response = client.get(f"https://127.0.0.1:{self.ports['8000']}/checkpoint")
        except httpx.TransportError:
            return None  # not listening yet
        return response.text if response.status_code == 200 else None

    def cosigners(self) -> set[str]:
        """The witnesses (by connector) whose valid cosignature the newest checkpoint carries."""
        note = self.checkpoint()
        if note is None:
            return set()
        witnesses = parse_witnesses(self.settings().audit.witnesses)
        return {name for name, verifier in witnesses.items() if cosignature_time(note, verifier) is not None}

    def wait_for_cosignatures(self) -> None:
        expected = set(self.settings().audit.witnesses)
        wait_until(lambda: self.cosigners() == expected, f"a checkpoint cosigned by {sorted(expected)}")

    def stop(self) -> None:
        for service in self.services:
            service.terminate()
        for service in self.services:
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def walkthrough(tmp_path: Path) -> Iterator[Walkthrough]:
    walk = Walkthrough(tmp_path / "dev")
    try:
        yield walk
    finally:
        walk.stop()


def test_readme_block_uses_only_the_set_up_commands() -> None:
    commands = readme_commands()
    assert not [c for c in commands if "python" in c], "the README's set-up runs xiezhi commands only"
    names = [" ".join(shlex.split(c)[:3]) for c in commands if c.startswith("xiezhi ")]
    for needed in ("xiezhi pki init", "xiezhi gateway init", "xiezhi connector init", "xiezhi gateway add-witness"):
        assert needed in names
    assert commands[-1].startswith("xiezhi audit verify") and "--from-witnesses" in commands[-1]


def test_readme_set_up_ends_with_every_witness_cosigning(walkthrough: Walkthrough) -> None:
    commands = readme_commands()
    results = [walkthrough.run(command) for command in commands]

    settings = walkthrough.settings()
    assert settings.tls is not None and len(settings.connectors) >= 2
    assert set(settings.audit.witnesses) == set(settings.connectors)  # every connector witnesses
    assert walkthrough.cosigners() == set(settings.connectors)
    verified = results[-1]
    assert verified is not None and "OK: every entry is in place" in verified.stdout  # exit status 0 checked in run
    cosigned = verified.stdout.split("cosigned:", 1)[1].splitlines()[0]
    assert all(f"xiezhi.internal/witness/{name} " in cosigned + " " for name in settings.connectors)
    for key in ("keyring.json", "audit-log.key", "idp.key"):
        assert (walkthrough.folder / "keys" / key).stat().st_mode & 0o077 == 0
    assert (walkthrough.folder / "court-keys" / "epoch-0001.key").stat().st_mode & 0o077 == 0
    assert (walkthrough.folder / "court-keys" / "witness.key").stat().st_mode & 0o077 == 0
    # The checkpoints are also published outside the database, where an auditor copies them.
    published = walkthrough.folder / "gateway" / "published"
    assert settings.audit.publish_dir == published.resolve()
    assert (published / "checkpoints.jsonl").read_text(encoding="utf-8").count('"note"') >= 1

    # Set-up again over the same folder: each init refuses and names the file in its way.
    for command in commands:
        words = shlex.split(walkthrough.translate(command))
        if words[1:3] in (["gateway", "init"], ["connector", "init"]):
            again = run_cli(*words[1:], env=walkthrough.env)
            assert again.returncode == 2, again.stderr
            assert "exists" in again.stderr and str(walkthrough.folder) in again.stderr
