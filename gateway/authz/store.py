"""The policy in the database, so every gateway instance decides on the same rules.

Casbin rules live in Casbin's `casbin_rule` table and load through the Casbin SQLAlchemy
adapter; organisations live in `organisations`. The model (`model.conf`), limits and
special actions are configuration files read from the policy folder. Every change writes
its rows, a `policy_revisions` row and its audit entry in one transaction; instances
compare the latest revision with the one they loaded and reload when it moved.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import casbin
from sqlalchemy import Engine, delete, func
from sqlalchemy_adapter import Adapter, CasbinRule
from sqlalchemy_adapter.adapter import Filter
from sqlmodel import Field, Session, SQLModel, select

from gateway.authz.policy import Policy, PolicyRules, load_limits, rules_from_lines
from gateway.orgs import Organisation, OrgTree
from gateway.purpose import load_special_actions


class OrgRecord(SQLModel, table=True):
    __tablename__ = "organisations"

    code: str = Field(primary_key=True)
    name: str
    parent: str | None = None


class PolicyRevision(SQLModel, table=True):
    """One change to the stored policy: which version it produced, when, by whom."""

    __tablename__ = "policy_revisions"

    revision: int | None = Field(default=None, primary_key=True)
    version: str
    change: str
    actor: str
    changed_at: datetime


class PolicyStore:
    def __init__(self, engine: Engine, policy_dir: Path) -> None:
        self._engine = engine
        self._policy_dir = policy_dir
        # Every table, casbin_rule included, comes from the migrations (`gateway.schema`).
        self._adapter = Adapter(engine, db_class=CasbinRule, create_table=False)

    def revision(self) -> int:
        with Session(self._engine) as session:
            return session.exec(select(func.max(PolicyRevision.revision))).one() or 0

    def load(self) -> Policy | None:
        """The stored policy, or None while the database holds no rules or no organisations yet."""
        model_text = (self._policy_dir / "model.conf").read_text(encoding="utf-8")
        model = casbin.model.Model()
        model.load_model_from_text(model_text)
        # The filtered load orders rows by id, so rules come back in the order they were saved.
        self._adapter.load_filtered_policy(model, Filter())
        lines = [[ptype, *rule] for ptype in ("p", "p2", "p3") for rule in model["p"][ptype].policy]
        with Session(self._engine) as session:
            orgs = session.exec(select(OrgRecord)).all()
        if not lines or not orgs:
            return None
        return Policy(
            rules=rules_from_lines(model_text, lines),
            orgs=OrgTree(Organisation(o.code, o.name, o.parent) for o in orgs),
            limits=load_limits(self._policy_dir / "limits.yaml"),
            actions=load_special_actions(self._policy_dir / "special_actions.yaml"),
        )

    def write_rules(self, session: Session, rules: PolicyRules) -> None:
        """Replace every stored rule (in the caller's transaction)."""
        session.execute(delete(CasbinRule))
        for ptype, *values in rules.lines():
            session.add(CasbinRule(ptype=ptype, **{f"v{i}": v for i, v in enumerate(values)}))

    def write_orgs(self, session: Session, tree: OrgTree) -> None:
        session.execute(delete(OrgRecord))
        session.add_all(OrgRecord(code=o.code, name=o.name, parent=o.parent) for o in tree)

    def add_revision(self, session: Session, policy: Policy, *, change: str, actor: str, at: datetime) -> None:
        session.add(PolicyRevision(version=policy.version, change=change, actor=actor, changed_at=at))
