from __future__ import annotations

from connectors.config import DistinctKeys, LatestValue
from connectors.reduce import Reduced, reduce_rows
from xiezhi.ids import normalise_subject_id

A18 = "11010519491231002X"
A15 = "130503670401001"  # the 15-digit form of 130503196704010016
A15_AS_18 = "130503196704010016"


def _ids(result: Reduced) -> set[str]:
    return {s.value for s in result.subjects}


def test_any_normalises_spellings_and_counts_invalid_rows() -> None:
    rows = [(A18.lower(),), (" 1101 0519 4912 3100 2x ",), ("110105194912310021",), (None,), ("",)]
    result = reduce_rows(rows, None)
    assert _ids(result) == {A18}
    assert (result.rows, result.invalid_rows) == (5, 3)


def test_distinct_keys_add_up_across_spellings() -> None:
    rows = [
        (A15, "（2021）浙0803执1号"),
        (A15_AS_18, "（2022）浙0803执2号"),
        (A18, "（2022）浙0803执3号"),
        (A18, "（2022）浙0803执3号"),
    ]
    assert _ids(reduce_rows(rows, DistinctKeys(distinct_keys_at_least=2))) == {A15_AS_18}


def test_latest_value_ignores_order_and_treats_ties_as_no() -> None:
    spec = LatestValue(latest_value_is="结婚")
    married_again = [(A18, "2024-01-01", "结婚"), (A18, "2019-05-01", "结婚"), (A18.lower(), "2021-03-01", "离婚")]
    assert _ids(reduce_rows(married_again, spec)) == {A18}
    divorced = [(A15, "2010-01-01", "结婚"), (A15_AS_18, "2020-01-01", "离婚")]
    assert _ids(reduce_rows(divorced, spec)) == set()
    tie = [(A18, "2022-02-02", "结婚"), (A18, "2022-02-02", "离婚")]
    assert _ids(reduce_rows(tie, spec)) == set()
    undated = [(A18, None, "结婚")]
    assert _ids(reduce_rows(undated, spec)) == set()


def test_companies_are_subjects_too() -> None:
    uscc = "91350100M000100Y43"
    result = reduce_rows([(uscc.lower(),)], None)
    assert {(s.id_type.value, s.value) for s in result.subjects} == {("uscc", uscc)}
    assert normalise_subject_id(uscc).id_type.value == "uscc"
