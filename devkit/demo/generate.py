"""Generate realistic synthetic agency databases and procuratorate lists for the demo.

`generate(data_dir)` writes one database per connector of the roster (deploy/connectors/),
with the tables its configuration declares, and the procuratorate's two lists:

    data_dir/agencies/court.sqlite          enforcement_cases, civil_cases
    data_dir/agencies/tax.sqlite            tax_declarations
    data_dir/agencies/housing_fund.sqlite   hf_accounts
    data_dir/agencies/civil_affairs.sqlite  marriage_registrations, dibao_recipients
    data_dir/agencies/<other>.sqlite        the tables of any other connector, empty
    data_dir/subjects.csv                   one row per 终本 case and debtor (案号,姓名,证件号码)
    data_dir/applicants.csv                 one row per 终本 case and applicant (申请执行人)

`databases` (agency → SQLAlchemy URL) writes an agency's tables into that database
instead of its SQLite file (`devkit.demo.agency_db`: PostgreSQL, MySQL, MariaDB, …), the
rows the same as the SQLite file would hold for the same seed and size.

The roster's `tables` are the schema (columns in the order rows are written; identifier
columns are those named `*_id`); the value vocabularies (the status, outcome, income type
and registration kind words) are a contract the connectors' queries are written against.

Every 终本 debtor is planted across agencies at fixed rates (`_RATES`, each an exact
sample), so a collision has something to find; noise people fill the agency tables without
appearing in either list. Identifiers are stored the way agencies really store them:
lowercase x, old 15-digit numbers, full-width digits, stray spaces and hyphens, one person
spelled differently from row to row, and a few outright invalid numbers (wrong check
character, impossible birth date, a lost digit) in every table and in both lists.

Deterministic for a seed: one random.Random(seed) drives everything, and every date lies
on or before AS_OF instead of depending on the clock.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import TypeVar

from connectors.config import table_columns
from connectors.roster import Roster
from devkit.demo.agency_db import write_tables
from devkit.environment import load_roster
from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import (
    IdType,
    normalise_subject_id,
    organisation_code_check_char,
    resident_id_check_char,
    uscc_check_char,
)

__all__ = ["AS_OF", "GenerationSummary", "generate"]

AS_OF = date(2025, 6, 30)

# The tables this generator fills ("agency.table") and the width of the rows it writes.
_FILLED: dict[str, int] = {
    "court.enforcement_cases": 8,
    "court.civil_cases": 8,
    "tax.tax_declarations": 4,
    "housing_fund.hf_accounts": 4,
    "civil_affairs.marriage_registrations": 4,
    "civil_affairs.dibao_recipients": 3,
}
_LIST_HEADER = ("案号", "姓名", "证件号码")

# Share of the 终本 debtors (dibao_applicant*: of the applicants) planted with each trait.
_RATES = {
    "company": 0.08,
    "second_case": 0.05,
    "third_case": 0.015,
    "duplicate_row": 0.01,
    "other_status_case": 0.05,
    "winning_unpaid": 0.12,
    "losing_or_paid": 0.06,
    "defendant": 0.10,
    "wage_recent": 0.15,
    "wage_old_only": 0.05,
    "wage_zero": 0.03,
    "interest": 0.06,
    "interest_zero": 0.02,
    "business": 0.04,
    "hf_normal": 0.10,
    "hf_sealed": 0.04,
    "hf_sealed_zero": 0.03,
    "hf_normal_zero": 0.03,
    "hf_second_account": 0.3,
    "married": 0.18,
    "remarried": 0.03,
    "divorced_recent": 0.07,
    "divorced_old": 0.05,
    "same_day_tie": 0.003,
    "dibao_debtor": 0.03,
    "dibao_debtor_past": 0.02,
    "dibao_applicant": 0.10,
    "dibao_applicant_past": 0.04,
    "invalid_case": 0.01,
    "invalid_applicant": 0.008,
    "invalid_list_typo": 0.01,
    "invalid_table_row": 0.005,
}

# (region code, weight): real county-level codes, weighted towards Quzhou 3308xx, Shaoxing
# 3306xx and Yichang 4205xx, where the articles' models ran.
_REGIONS = (
    *[("330802", 3), ("330803", 8), ("330822", 2), ("330824", 2), ("330825", 2), ("330881", 3)],
    *[("330602", 2), ("330603", 2), ("330604", 2), ("330624", 1), ("330681", 2), ("330683", 2)],
    *[("420502", 1), ("420503", 1), ("420504", 1), ("420505", 1), ("420506", 1), ("420525", 1)],
    *[("420526", 1), ("420527", 1), ("420528", 1), ("420529", 1), ("420581", 1), ("420582", 2)],
    *[("420583", 1), ("330102", 1), ("330106", 1), ("330203", 1), ("330212", 1), ("330302", 1)],
    *[("330782", 1), ("110101", 1), ("110105", 1), ("310104", 1), ("320813", 1), ("422801", 1)],
    *[("421222", 1), ("150204", 1), ("510104", 1), ("360102", 1), ("350102", 1), ("340104", 1)],
)
_REGION_CODES = [code for code, _ in _REGIONS]
_REGION_WEIGHTS = [weight for _, weight in _REGIONS]
_CITIES = {"3308": "衢州市", "3306": "绍兴市", "4205": "宜昌市"}
_COMPANY_REGIONS = [code for code in _REGION_CODES if code[:4] in _CITIES]
_COURTS = ["浙0803", "浙0802", "浙0881", "浙0683", "鄂0582"]
_COURT_WEIGHTS = [12, 3, 2, 2, 1]

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
_SURNAMES += "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖夏方邹孟熊秦江尹薛雷侯毛祝柴龚邵钱严"
_MALE_GIVEN = "伟强磊军勇杰涛斌超明刚平辉鹏华飞建国志文海波林东宏俊峰浩荣庆春福"
_FEMALE_GIVEN = "芳娜敏静丽艳娟霞燕玲婷秀英华兰萍红梅琴云洁颖慧莉倩凤珍月"
_BRANDS = "恒达 鑫源 宏盛 金诚 华美 永盛 天衢 瑞丰 顺发 隆兴 博远 聚福 新锐 弘业 信达 振华".split()
_TRADES = "建材 建筑工程 商贸 食品 机械制造 物流 装饰工程 农业开发 电子科技 房地产开发 纺织".split()
_INSTITUTIONS = (  # banks and lenders in Quzhou (region 330800), frequent applicants
    "浙江衢江农村商业银行股份有限公司",
    "中国农业银行股份有限公司衢州衢江支行",
    "衢州市衢江区信安小额贷款有限公司",
    "中国工商银行股份有限公司衢州分行",
    "绍兴银行股份有限公司衢州分行",
    "浙江衢州柯城农村商业银行股份有限公司",
)
_USCC_SYMBOLS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
_WON = ("判决", "调解成功")
_NOT_WON = ("撤诉", "调解无效")

Row = tuple[str | int | float | None, ...]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """What generate() wrote. Table keys are "agency.table", e.g. "court.civil_cases"."""

    subject_rows: int
    applicant_rows: int
    table_rows: dict[str, int]
    invalid_rows: dict[str, int]  # the table keys plus "subjects.csv" and "applicants.csv"

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid_rows.values())


@dataclass(frozen=True, slots=True)
class _Party:
    name: str
    id18: str  # canonical and valid
    id_type: IdType
    born: date | None = None  # None for companies


@dataclass(frozen=True, slots=True)
class _Case:
    """An enforcement case as the court recorded it: who, and how their IDs were typed."""

    case_no: str
    debtor: _Party
    debtor_raw: str
    applicant: _Party
    applicant_raw: str


def generate(
    data_dir: Path,
    *,
    seed: int = 7,
    debtors: int = 1200,
    roster: Roster | None = None,
    databases: Mapping[str, str] | None = None,
) -> GenerationSummary:
    """Write the agency databases and the two lists under `data_dir`, replacing old ones.

    `debtors` distinct 终本 debtors are planted (about 8% of them companies), plus a few
    whose ID the court recorded invalid; the lists have one row per 终本 case, so a
    little more than `debtors` rows. The same seed and size always give the same data.
    The databases follow the tables of `roster` (default: deploy/connectors); raises
    InvalidInput if it lacks a table this generator fills or gives one another width.
    An agency named in `databases` is written to that SQLAlchemy URL (an existing database,
    its tables replaced) instead of data_dir/agencies/<agency>.sqlite.
    """
    tables = _tables(roster or load_roster())
    id_columns = {key: _id_columns(tables[key]) for key in _FILLED}
    world = _World(Random(seed), noise=max(100, debtors), id_columns=id_columns)
    subjects = world.debtors(debtors)
    persons = [party for party in subjects if party.id_type is IdType.RESIDENT]
    cases = world.terminated_cases(subjects)
    world.other_enforcement(subjects)
    world.civil_cases(subjects)
    world.tax(persons)
    world.housing_fund(persons)
    world.marriages(persons)
    applicants = {case.applicant.id18: case.applicant for case in cases}
    person_applicants = [p for p in applicants.values() if p.id_type is IdType.RESIDENT]
    world.dibao(persons, person_applicants)
    world.shuffle_rows()
    world.plant_invalid_rows(persons)
    subject_rows = world.list_rows(cases, debtor_side=True)
    applicant_rows = world.list_rows(cases, debtor_side=False)

    rows = {key: world.tables.get(key, []) for key in tables}
    _write_databases(data_dir / "agencies", tables, rows, databases or {})
    _write_list(data_dir / "subjects.csv", subject_rows)
    _write_list(data_dir / "applicants.csv", applicant_rows)
    invalid = {key: _count_invalid(rows[key], _id_columns(tables[key])) for key in tables}
    invalid["subjects.csv"] = _count_invalid(subject_rows, (2,))
    invalid["applicants.csv"] = _count_invalid(applicant_rows, (2,))
    return GenerationSummary(
        subject_rows=len(subject_rows),
        applicant_rows=len(applicant_rows),
        table_rows={key: len(table) for key, table in rows.items()},
        invalid_rows=invalid,
    )


class _World:
    """The synthetic population and the agency rows recorded about it."""

    def __init__(self, rng: Random, *, noise: int, id_columns: dict[str, tuple[int, ...]]) -> None:
        self.rng = rng
        self.id_columns = id_columns  # "agency.table" → positions of its identifier columns
        self.used_ids: set[str] = set()
        self.case_numbers: dict[tuple[int, str, str], int] = {}
        self.tables: dict[str, list[Row]] = {key: [] for key in _FILLED}
        self.institutions = [self.company(name, "330800") for name in _INSTITUTIONS]
        self.noise = [self.person() for _ in range(noise)]
        self.noise_companies = [self.company() for _ in range(noise // 20)]

    # --- sampling -------------------------------------------------------------------------

    def count(self, pool: Sequence[object], trait: str) -> int:
        """How many of `pool` carry `trait`: its rate, but at least three."""
        return min(len(pool), max(3, round(len(pool) * _RATES[trait])))

    def sample(self, pool: Sequence[_T], trait: str) -> list[_T]:
        return self.rng.sample(pool, self.count(pool, trait))

    def partition(self, pool: Sequence[_T], traits: list[str]) -> list[list[_T]]:
        """Disjoint samples of `pool`, one per trait."""
        shuffled = self.rng.sample(pool, len(pool))
        groups, start = [], 0
        for trait in traits:
            groups.append(shuffled[start : start + self.count(pool, trait)])
            start += len(groups[-1])
        return groups

    def date_between(self, start: date, end: date) -> date:
        assert start <= end, "a date window must not be empty"
        return start + timedelta(days=self.rng.randrange((end - start).days + 1))

    # --- parties --------------------------------------------------------------------------

    def debtors(self, count: int) -> list[_Party]:
        companies = round(count * _RATES["company"])
        parties = [self.company() for _ in range(companies)]
        parties += [self.person() for _ in range(count - companies)]
        self.rng.shuffle(parties)
        return parties

    def person(self, first_year: int = 1950, last_year: int = 2000) -> _Party:
        rng = self.rng
        male = rng.random() < 0.6
        given = rng.choices(_MALE_GIVEN if male else _FEMALE_GIVEN, k=rng.choice((1, 2, 2)))
        name = rng.choice(_SURNAMES) + "".join(given)
        while True:
            born = self.date_between(date(first_year, 1, 1), date(last_year, 12, 31))
            region = rng.choices(_REGION_CODES, weights=_REGION_WEIGHTS)[0]
            sequence = rng.randrange(0, 998, 2) + (1 if male else 0)  # odd for men
            first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
            id18 = first17 + resident_id_check_char(first17)
            if id18 not in self.used_ids:
                self.used_ids.add(id18)
                return _Party(name, id18, IdType.RESIDENT, born)

    def company(self, name: str | None = None, region: str | None = None) -> _Party:
        rng = self.rng
        region = region or rng.choice(_COMPANY_REGIONS)
        if name is None:
            suffix = rng.choice(("有限公司", "有限公司", "有限责任公司"))
            name = f"{_CITIES[region[:4]]}{rng.choice(_BRANDS)}{rng.choice(_TRADES)}{suffix}"
        while True:
            body = "MA2" + "".join(rng.choices(_USCC_SYMBOLS, k=5))
            first17 = "91" + region + body + organisation_code_check_char(body)
            id18 = first17 + uscc_check_char(first17)
            if id18 not in self.used_ids:
                self.used_ids.add(id18)
                return _Party(name, id18, IdType.USCC)

    def any_noise(self) -> _Party:
        if self.rng.random() < 0.1:
            return self.rng.choice(self.noise_companies)
        return self.rng.choice(self.noise)

    # --- spellings ------------------------------------------------------------------------

    def spell(self, party: _Party) -> str:
        """One row's spelling of the party's identifier, as agencies really store it."""
        value, roll = party.id18, self.rng.random()
        if party.born is not None and party.born.year < 2000 and roll < 0.05:
            return value[:6] + value[8:17]  # the old 15-digit number
        if roll < 0.09:
            return value.translate(_FULL_WIDTH)
        if roll < 0.12:
            return f"{value[:6]} {value[6:14]} {value[14:]}"
        if roll < 0.15:
            return f"{value[:6]}-{value[6:14]}-{value[14:]}"
        if roll < 0.17:
            return self.rng.choice((" ", "\u3000")) + value + " "
        if roll < 0.20 and party.id_type is IdType.USCC:
            return value.lower()
        if roll < 0.60 and value.endswith("X"):
            return value.lower()
        return value

    def corrupt(self, party: _Party) -> str:
        """An outright invalid spelling: wrong check character, impossible date, lost digit."""
        value = party.id18
        while True:
            kind = self.rng.randrange(3)
            if kind == 0:
                candidate = value[:17] + self.rng.choice("0123456789X")
            elif kind == 1 and party.id_type is IdType.RESIDENT:
                month_day = self.rng.choice(("0230", "0231", "1301", "0431", "0001"))
                first17 = value[:10] + month_day + value[14:17]
                candidate = first17 + resident_id_check_char(first17)
            else:
                cut = self.rng.randrange(6, 17)
                candidate = value[:cut] + value[cut + 1 :]
            if not _is_valid(candidate):
                return candidate

    # --- court ----------------------------------------------------------------------------

    def case_no(self, year: int, word: str) -> str:
        """A case number in the real format, e.g. （2023）浙0803执1234号."""
        court = self.rng.choices(_COURTS, weights=_COURT_WEIGHTS)[0]
        last = self.case_numbers.get((year, court, word), self.rng.randrange(60, 400))
        number = self.case_numbers[year, court, word] = last + self.rng.randrange(1, 12)
        if self.rng.random() < 0.12:  # half-width parentheses, as some courts type them
            return f"({year}){court}{word}{number}号"
        return f"（{year}）{court}{word}{number}号"

    def applicant(self) -> _Party:
        roll = self.rng.random()
        if roll < 0.25:
            return self.rng.choice(self.institutions)
        if roll < 0.35:
            return self.company()
        return self.person(1945, 1998)

    def terminated_cases(self, subjects: list[_Party]) -> list[_Case]:
        """One 终本 case per debtor, more for some; some with an invalid recorded debtor ID."""
        occurrences = [(debtor, False) for debtor in subjects]
        occurrences += [(debtor, False) for debtor in self.sample(subjects, "second_case")]
        occurrences += [(debtor, False) for debtor in 2 * self.sample(subjects, "third_case")]
        invalid = range(self.count(subjects, "invalid_case"))
        occurrences += [(self.person(), True) for _ in invalid]
        self.rng.shuffle(occurrences)
        bad_applicants = set(self.sample(range(len(occurrences)), "invalid_applicant"))
        cases = [
            self.terminated_case(debtor, invalid, at in bad_applicants)
            for at, (debtor, invalid) in enumerate(occurrences)
        ]
        for case in self.sample(cases, "duplicate_row"):  # the same case entered twice
            self.enforcement_row(case, self.spell(case.debtor), case.applicant_raw)
        return cases

    def terminated_case(self, debtor: _Party, invalid: bool, invalid_applicant: bool) -> _Case:
        year = self.rng.randrange(2018, 2025)
        case_no = self.case_no(year, "执恢" if self.rng.random() < 0.05 else "执")
        applicant = self.applicant()
        applicant_raw = self.corrupt(applicant) if invalid_applicant else self.spell(applicant)
        debtor_raw = self.corrupt(debtor) if invalid else self.spell(debtor)
        case = _Case(case_no, debtor, debtor_raw, applicant, applicant_raw)
        self.enforcement_row(case, debtor_raw, applicant_raw)
        return case

    def enforcement_row(self, case: _Case, debtor_raw: str, applicant_raw: str, status: str = "终本") -> None:
        amount = round(min(5e6, max(2000.0, self.rng.lognormvariate(11.0, 1.1))), 2)
        terminated_on = None
        if status == "终本":
            start = date(int(case.case_no[1:5]), 3, 1)
            end = min(date(start.year + 1, 12, 31), AS_OF)
            terminated_on = self.date_between(start, end).isoformat()
        self.tables["court.enforcement_cases"].append(
            (
                case.case_no,
                debtor_raw,
                case.debtor.name,
                applicant_raw,
                case.applicant.name,
                amount,
                status,
                terminated_on,
            )
        )

    def other_enforcement(self, subjects: list[_Party]) -> None:
        """Cases still running or paid in full: debtors too, but not 终本."""
        debtors = self.sample(subjects, "other_status_case")
        debtors += self.rng.sample(self.noise, len(self.noise) // 4)
        for debtor in debtors:
            year = self.rng.randrange(2019, 2026)
            status = "执行中" if year >= 2024 or self.rng.random() < 0.3 else "执行完毕"
            applicant = self.applicant()
            case = _Case(self.case_no(year, "执"), debtor, "", applicant, "")
            self.enforcement_row(case, self.spell(debtor), self.spell(applicant), status)

    def civil_cases(self, subjects: list[_Party]) -> None:
        for plaintiff in self.sample(subjects, "winning_unpaid"):
            self.civil_row(plaintiff, self.any_noise(), self.rng.choice(_WON), performed=0)
        for plaintiff in self.sample(subjects, "losing_or_paid"):
            outcome = self.rng.choice(_WON + _NOT_WON)
            self.civil_row(plaintiff, self.any_noise(), outcome, performed=int(outcome in _WON))
        for defendant in self.sample(subjects, "defendant"):
            self.civil_row(self.any_noise(), defendant, "判决", performed=0)
        for _ in range(len(self.noise) // 2):
            outcome = self.rng.choices(_WON + _NOT_WON, weights=(5, 3, 2, 1))[0]
            performed = int(outcome in _WON and self.rng.random() < 0.6)
            self.civil_row(self.any_noise(), self.any_noise(), outcome, performed)

    def civil_row(self, plaintiff: _Party, defendant: _Party, outcome: str, performed: int) -> None:
        year = self.rng.randrange(2017, 2025)
        case_no = self.case_no(year, "民终" if self.rng.random() < 0.1 else "民初")
        won = outcome in _WON
        amount = round(self.rng.lognormvariate(10.5, 1.0), 2) if won else None
        closed_on = self.date_between(date(year, 3, 1), min(date(year + 1, 12, 31), AS_OF))
        self.tables["court.civil_cases"].append(
            (
                case_no,
                self.spell(plaintiff),
                plaintiff.name,
                self.spell(defendant),
                outcome,
                amount,
                performed,
                closed_on.isoformat(),
            )
        )

    # --- tax, housing fund ----------------------------------------------------------------

    def tax(self, persons: list[_Party]) -> None:
        for person in self.sample(persons, "wage_recent"):
            self.declare(person, range(self.rng.randrange(2019, 2024), 2026), "工资薪金", 36_000)
        for person in self.sample(persons, "wage_old_only"):
            self.declare(person, range(2019, self.rng.randrange(2020, 2023)), "工资薪金", 30_000)
        for person in self.sample(persons, "wage_zero"):
            self.declare(person, range(2023, 2026), "工资薪金", 0)
        for person in self.sample(persons, "interest"):
            self.declare(person, self.years(2), "利息股息红利", 800)
        for person in self.sample(persons, "interest_zero"):
            self.declare(person, self.years(1), "利息股息红利", 0)
        for person in self.sample(persons, "business"):
            self.declare(person, self.years(3), "经营所得", self.rng.choice((0, 20_000)))
        for person in self.rng.sample(self.noise, len(self.noise) // 2):
            kind = self.rng.choices(("工资薪金", "利息股息红利", "经营所得"), weights=(8, 1, 1))[0]
            self.declare(person, self.years(4), kind, self.rng.choice((0, 30_000, 30_000)))

    def years(self, most: int) -> list[int]:
        return sorted(self.rng.sample(range(2019, 2026), self.rng.randint(1, most)))

    def declare(self, person: _Party, years: Sequence[int], kind: str, base: float) -> None:
        for year in years:
            amount = round(base * self.rng.uniform(1.0, 5.0), 2)
            self.tables["tax.tax_declarations"].append((self.spell(person), year, kind, amount))

    def housing_fund(self, persons: list[_Party]) -> None:
        holders = [(p, "正常", 90_000.0) for p in self.sample(persons, "hf_normal")]
        holders += [(p, "封存", 50_000.0) for p in self.sample(persons, "hf_sealed")]
        holders += [(p, "封存", 0.0) for p in self.sample(persons, "hf_sealed_zero")]
        holders += [(p, "正常", 0.0) for p in self.sample(persons, "hf_normal_zero")]
        holders += [(p, "正常", 60_000.0) for p in self.rng.sample(self.noise, len(self.noise) // 3)]
        holders += [(p, "封存", 8_000.0) for p in self.rng.sample(self.noise, len(self.noise) // 10)]
        for holder, status, top in self.sample(holders, "hf_second_account"):
            # A job change: the old account sealed (often emptied), a new one opened.
            other = "封存" if status == "正常" else "正常"
            holders.append((holder, other, self.rng.choice((0.0, 0.0, top / 4))))
        for holder, status, top in holders:
            balance = round(self.rng.uniform(300.0, top), 2) if top else 0.0
            updated_on = self.date_between(date(2019, 1, 1), AS_OF).isoformat()
            self.tables["housing_fund.hf_accounts"].append((self.spell(holder), status, balance, updated_on))

    # --- civil affairs --------------------------------------------------------------------

    def marriages(self, persons: list[_Party]) -> None:
        # Born by 1990, so that every history below fits between age 22 and AS_OF; the
        # groups are disjoint, so each planted history is the person's whole history.
        adults = [p for p in persons if p.born is not None and p.born.year <= 1990]
        traits = ["married", "remarried", "divorced_recent", "divorced_old", "same_day_tie"]
        married, remarried, recent, old, tied = self.partition(adults, traits)
        for person in married:
            self.register(person, [("结婚", AS_OF)])
        for person in remarried:
            events = [("结婚", date(2014, 12, 31)), ("离婚", date(2024, 6, 30)), ("结婚", AS_OF)]
            self.register(person, events)
        for person in recent:
            self.register(person, [("结婚", date(2019, 6, 30)), ("离婚", AS_OF)])
        for person in old:
            self.register(person, [("结婚", date(2018, 12, 31)), ("离婚", date(2019, 12, 31))])
        for person in tied:
            # Both entered on one day: no evidence of a current marriage (离婚 wins a tie).
            on = self.date_between(date(2015, 1, 1), AS_OF)
            self.registration(person, self.person(1950, 1990), "结婚", on)
            self.registration(person, self.person(1950, 1990), "离婚", on)
        noise = [p for p in self.noise if p.born is not None and p.born.year <= 1990]
        for person in self.rng.sample(noise, len(noise) // 3):
            divorce = [("离婚", AS_OF)] if self.rng.random() < 0.3 else []
            self.register(person, [("结婚", date(2020, 12, 31)), *divorce])

    def register(self, person: _Party, events: list[tuple[str, date]]) -> None:
        """Registrations in order, a month or more apart, each on or before its last day.

        Each 结婚 is to a new spouse; each 离婚 ends the marriage registered before it.
        """
        assert person.born is not None
        after = date(person.born.year + 22, person.born.month, 1)
        spouse = person  # replaced by the first event, always a 结婚
        for kind, last_day in events:
            if kind == "结婚":
                spouse = self.person(1950, 1990)
            on = self.date_between(after, last_day)
            self.registration(person, spouse, kind, on)
            after = on + timedelta(days=30)

    def registration(self, person: _Party, spouse: _Party, kind: str, on: date) -> None:
        """One event writes two rows, one for each spouse."""
        rows = self.tables["civil_affairs.marriage_registrations"]
        rows.append((self.spell(person), self.spell(spouse), kind, on.isoformat()))
        rows.append((self.spell(spouse), self.spell(person), kind, on.isoformat()))

    def dibao(self, persons: list[_Party], applicants: list[_Party]) -> None:
        current = self.sample(persons, "dibao_debtor") + self.sample(applicants, "dibao_applicant")
        current += self.rng.sample(self.noise, len(self.noise) // 10)
        past = self.sample(persons, "dibao_debtor_past")
        past += self.sample(applicants, "dibao_applicant_past")
        past += self.rng.sample(self.noise, len(self.noise) // 20)
        rows = self.tables["civil_affairs.dibao_recipients"]
        for person in current:
            since = self.date_between(date(2012, 1, 1), date(2024, 12, 31))
            rows.append((self.spell(person), since.isoformat(), None))
        for person in past:
            since = self.date_between(date(2012, 1, 1), date(2023, 12, 31))
            until = self.date_between(since + timedelta(days=90), AS_OF)
            rows.append((self.spell(person), since.isoformat(), until.isoformat()))

    # --- invalid identifiers and the lists ------------------------------------------------

    def shuffle_rows(self) -> None:
        """Rows were written trait by trait; agencies hold them in no such order."""
        for rows in self.tables.values():
            self.rng.shuffle(rows)

    def plant_invalid_rows(self, persons: list[_Party]) -> None:
        """Copies of real rows whose identifier was mistyped, for a debtor or a stranger."""
        for key, rows in self.tables.items():
            if key == "court.enforcement_cases":
                continue  # its invalid IDs are planted with the cases, so the lists carry them
            column = self.id_columns[key][0]
            for _ in range(self.count(rows, "invalid_table_row")):
                owner = self.rng.choice(persons) if self.rng.random() < 0.5 else self.person()
                row = list(self.rng.choice(rows))
                row[column] = self.corrupt(owner)
                if key == "court.civil_cases":
                    row[2] = owner.name
                rows.insert(self.rng.randrange(len(rows) + 1), tuple(row))

    def list_rows(self, cases: list[_Case], *, debtor_side: bool) -> list[Row]:
        """The procuratorate's list: the court's spelling, or its own, or its own typo."""
        rows: list[Row] = []
        for case in cases:
            party = case.debtor if debtor_side else case.applicant
            raw = case.debtor_raw if debtor_side else case.applicant_raw
            if _is_valid(raw):
                roll = self.rng.random()
                if roll < _RATES["invalid_list_typo"]:
                    raw = self.corrupt(party)
                elif roll < 0.4:
                    raw = self.spell(party)
            rows.append((case.case_no, party.name, raw))
        return rows


# --- helpers and writers ------------------------------------------------------------------


def _is_valid(raw: str) -> bool:
    try:
        normalise_subject_id(raw, today=AS_OF)
    except InvalidIdentifier:
        return False
    return True


def _count_invalid(rows: list[Row], columns: tuple[int, ...]) -> int:
    return sum(1 for row in rows if not all(_is_valid(str(row[c])) for c in columns))


Tables = dict[str, list[tuple[str, str]]]  # "agency.table" → its (column, type) in row order


def _tables(roster: Roster) -> Tables:
    """Every roster connector's tables, checked against the rows this generator writes."""
    tables: Tables = {}
    for entry in roster:
        if not entry.config.tables:
            raise InvalidInput(
                f"{entry.path.name}: connector {entry.name} declares no tables, so no database can be "
                "generated for it; give the demo --data with agencies/<connector>.sqlite instead"
            )
        for table, columns in entry.config.tables.items():
            tables[f"{entry.name}.{table}"] = table_columns(columns)
    for key, width in _FILLED.items():
        if key not in tables or len(tables[key]) != width:
            agency, table = key.split(".")
            raise InvalidInput(f"the roster's {agency} needs a table {table} of {width} columns for generated data")
    return tables


def _id_columns(columns: list[tuple[str, str]]) -> tuple[int, ...]:
    """Positions of a table's identifier columns: those named `*_id`."""
    return tuple(at for at, (name, _) in enumerate(columns) if name.endswith("_id"))


def _write_databases(
    directory: Path, tables: Tables, rows: dict[str, list[Row]], databases: Mapping[str, str]
) -> None:
    """One database per agency, holding its tables in the order the roster gives them: the
    agency's URL in `databases`, else a SQLite file in `directory`."""
    agencies = list(dict.fromkeys(key.split(".")[0] for key in tables))
    unknown = sorted(set(databases) - set(agencies))
    if unknown:
        raise InvalidInput(f"no connector {unknown[0]} in the roster to write a database for")
    directory.mkdir(parents=True, exist_ok=True)
    for agency in agencies:
        if agency in databases:
            own = {key.split(".")[1]: key for key in tables if key.split(".")[0] == agency}
            write_tables(
                databases[agency],
                {table: tables[key] for table, key in own.items()},
                {table: rows[key] for table, key in own.items()},
            )
            continue
        path = directory / f"{agency}.sqlite"
        path.unlink(missing_ok=True)
        with closing(sqlite3.connect(path)) as connection, connection:
            for key in (k for k in tables if k.split(".")[0] == agency):
                table, columns = key.split(".")[1], tables[key]
                definition = ", ".join(f"{name} {kind}" for name, kind in columns)
                connection.execute(f"CREATE TABLE {table} ({definition})")
                marks = ", ".join("?" * len(columns))
                connection.executemany(f"INSERT INTO {table} VALUES ({marks})", rows[key])


def _write_list(path: Path, rows: list[Row]) -> None:
    """UTF-8 with a BOM, so Excel opens the Chinese headers correctly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_LIST_HEADER)
        writer.writerows(rows)
