"""End-to-end subjects per second: the asset_sweep model (the four reference connectors,
eight capabilities) over 10,000 and 100,000 subjects, with the gateway and connectors running
as separate processes on loopback, exactly as `xiezhi demo` runs them.

Each figure is the median of --repeats runs of the requester's whole job: read and
validate the list, create the request, blind, relay through the gateway, connector
evaluation with proofs, proof verification, finalisation, token lookup, result read,
report writing. Index building is measured by bench_index.py, not here.
"""

from __future__ import annotations

import argparse
import csv
import functools
import shutil
import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, dataset, median_seconds
from devkit.demo.run import (
    DEMO_APPROVER,
    DEMO_LEGAL_BASIS,
    DEMO_ORG,
    DEMO_PURPOSE,
    Approver,
    deployment,
    publish_connector,
)
from devkit.environment import REPO_ROOT, issue_token, load_roster
from requester.job import match_file
from requester.protocol import MatchSpec


def bench_policies() -> Path:
    """The repository's policies with a daily subject quota large enough for the bench's runs."""
    target = OUT / "policies"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "policies", target)
    limits = yaml.safe_load((target / "limits.yaml").read_text(encoding="utf-8"))
    limits["quotas"]["prosecutor"]["subjects_per_day"] = 100_000_000
    (target / "limits.yaml").write_text(yaml.safe_dump(limits), encoding="utf-8")
    return target


def subjects_file(data: Path, count: int) -> Path:
    """The first `count` rows of the generated debtor list."""
    with (data / "subjects.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) - 1 < count:
        raise SystemExit(f"data set has {len(rows) - 1} subject rows, need {count}")
    path = OUT / f"subjects-{count}.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows(rows[: count + 1])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = dataset(int(max(args.sizes) / 1.08) + 1000)
    work = OUT / "e2e"
    table = Table(title=f"asset_sweep end to end, 4 connectors (median of {args.repeats})")
    for column in ("subjects", "seconds", "subjects/s", "runs (s)"):
        table.add_column(column, justify="right")
    roster = load_roster()
    with deployment(work, roster, bench_policies()) as (dev, gateway):
        assert dev.pki is not None  # the deployment speaks mutual TLS
        requester = dev.pki.client("requester")
        for connector in roster.names():
            publish_connector(dev, work, data, roster, connector, gateway, show_progress=False)
        token = issue_token(
            dev.idp_key,
            subject=f"prosecutor-{DEMO_ORG}-bench",
            roles=["prosecutor"],
            org=DEMO_ORG,
            clearance=3,
            ttl_seconds=24 * 3600,
        )
        # Over the batch limit and tier 3: every run waits for the head's approval, as in the demo.
        head = issue_token(dev.idp_key, subject=DEMO_APPROVER, roles=["dept_head"], org=DEMO_ORG, ttl_seconds=86400)
        approver = Approver(gateway, head, requester)
        spec = MatchSpec("asset_sweep", DEMO_PURPOSE, DEMO_LEGAL_BASIS)
        for size in args.sizes:
            subjects = subjects_file(data, size)
            seconds, runs = median_seconds(
                functools.partial(
                    match_file,
                    gateway,
                    token,
                    spec,
                    subjects,
                    OUT / "e2e-report.csv",
                    show_progress=False,
                    on_pending=approver,
                    tls=requester,
                ),
                args.repeats,
            )
            table.add_row(f"{size:,}", f"{seconds:.1f}", f"{size / seconds:,.0f}", " ".join(f"{t:.1f}" for t in runs))
    Console().print(table)


if __name__ == "__main__":
    main()
