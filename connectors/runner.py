"""Build-and-publish: the connector's batch job, shared by the CLI and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.config import ConnectorConfig
from connectors.engines import Engine
from connectors.incremental import BuildReport, build_and_publish_incremental
from connectors.keys import KeyStore
from connectors.publisher import Publisher
from xiezhi.tls import TLSFiles


@dataclass(frozen=True)
class PublishReport:
    built: BuildReport

    def lines(self) -> list[str]:
        """Counts only: rows read, rows whose ID could not be normalised, tokens published."""
        out = [f"{self.built.connector}: epoch {self.built.epoch}, {self.built.subjects} subjects evaluated"]
        for index in self.built.capabilities:
            change = "whole set" if index.full else f"delta +{index.added} −{index.removed}"
            out.append(
                f"  {index.capability.id}: rows read {index.rows}, rows with an invalid ID (not indexed) "
                f"{index.invalid_rows}, tokens {index.tokens} ({change})"
            )
        return out


def build_and_publish(
    config_path: Path,
    key_dir: Path,
    gateway_url: str,
    token: str,
    *,
    database_url: str | None = None,
    rotate: bool = False,
    show_progress: bool = False,
    workers: int | None = None,
    tls: TLSFiles | None = None,
    insecure_http: bool = False,
    state_dir: Path | None = None,
    engine: Engine | None = None,
) -> PublishReport:
    """Build the connector's indexes and bring the gateway's up to date: the whole sets for a
    new epoch (`rotate`, or the first build), deltas after. The build's state is kept in
    `state_dir` (default: `<key_dir>/build`), so a build that stopped resumes. `engine`
    evaluates (default: this machine's pool of `workers` processes); the caller closes it."""
    config = ConnectorConfig.from_file(config_path, database_url=database_url)
    keys = KeyStore(key_dir)
    epoch = keys.rotate() if rotate else keys.ensure()
    publisher = Publisher(gateway_url, token, tls=tls, insecure_http=insecure_http)
    with Progress(
        TextColumn(f"index {config.connector}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("evaluate", total=None)
        built = build_and_publish_incremental(
            config,
            keys.key_pair(epoch),
            epoch,
            state_dir or key_dir / "build",
            publisher,
            workers=workers,
            progress=lambda n: progress.advance(task, n),
            engine=engine,
        )
    return PublishReport(built)
