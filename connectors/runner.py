"""Build-and-publish: the connector's batch job, shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.config import ConnectorConfig
from connectors.engines import Engine
from connectors.indexer import BuiltIndex, build
from connectors.keys import KeyStore
from connectors.publisher import Publisher
from xiezhi.tls import TLSFiles


@dataclass(frozen=True)
class PublishReport:
    built: BuiltIndex

    def lines(self) -> list[str]:
        """Counts only: rows read, rows whose ID could not be normalised, tokens published."""
        out = [f"{self.built.connector}: epoch {self.built.epoch}, {self.built.subjects} subjects evaluated"]
        for index in self.built.capabilities:
            out.append(
                f"  {index.capability.id}: rows read {index.rows}, rows with an invalid ID (not indexed) "
                f"{index.invalid_rows}, tokens {len(index.tokens)}"
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
    engine: Engine | None = None,
) -> PublishReport:
    """Build the connector's indexes (evaluated by `engine`: default, this machine's pool of
    `workers` processes) and publish them to the gateway."""
    config = ConnectorConfig.from_file(config_path, database_url=database_url)
    keys = KeyStore(key_dir)
    epoch = keys.rotate() if rotate else keys.ensure()
    with Progress(
        TextColumn(f"index {config.connector}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=True,
    ) as progress:
        built = build(config, keys.key_pair(epoch), epoch, workers=workers, progress=_bar(progress), engine=engine)
    Publisher(gateway_url, token, tls=tls, insecure_http=insecure_http).publish(built)
    return PublishReport(built)


def _bar(progress: Progress) -> Callable[[int], Callable[[int], None]]:
    def start(total: int) -> Callable[[int], None]:
        task = progress.add_task("evaluate", total=total)
        return lambda n: progress.advance(task, n)

    return start
