"""No test asserts on how long something took: on a loaded machine any such bound is a coin toss.

Speed is measured in bench/. A test may bound a wait for a condition (`tests.polling.wait_until`,
which raises only when a generous deadline passes), but never `assert`s on a clock. This walks
every module of tests/ and fails on an `assert` whose expression uses a clock reading: a call
of time.perf_counter, monotonic, time, process_time or thread_time (or an `_ns` form), a name
bound in the same function to a value computed from one, or what a function or fixture of the
module (or of conftest.py) returns computed from one. A returned tuple is followed member by
member, so the other members of a fixture that also returns a duration stay clean.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CLOCKS = frozenset(
    name
    for base in ("perf_counter", "monotonic", "time", "process_time", "thread_time")
    for name in (base, base + "_ns")
)

# Whether a value was computed from a clock reading; a tuple's members one by one.
Shape = bool | tuple["Shape", ...]


def _any(shape: Shape) -> bool:
    return any(_any(member) for member in shape) if isinstance(shape, tuple) else shape


def _merge(a: Shape, b: Shape) -> Shape:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_merge(x, y) for x, y in zip(a, b, strict=True))
    return _any(a) or _any(b)


class _Module:
    """The clock readings of one module: which names are clocks, what each function returns."""

    def __init__(self, tree: ast.Module, inherited: dict[str, Shape] | None = None) -> None:
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        # `import time [as t]`, and `from time import perf_counter [as pc]`
        self.time_modules = {a.asname or a.name for n in imports if isinstance(n, ast.Import) for a in n.names
                             if a.name == "time"}  # fmt: skip
        self.clocks = {a.asname or a.name for n in imports if isinstance(n, ast.ImportFrom) and n.module == "time"
                       for a in n.names if a.name in CLOCKS}  # fmt: skip
        self.returns: dict[str, Shape] = dict(inherited or {})
        self.functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        if not (self.time_modules or self.clocks or any(map(_any, self.returns.values()))):
            return  # no clock to read: nothing to follow
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        before: dict[str, Shape] | None = None
        while self.returns != before:  # functions may return what other functions return
            before = dict(self.returns)
            for function in functions:
                self.returns[function.name] = self._returned(function)
        self.functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]

    def timing_asserts(self) -> list[int]:
        """Line numbers of the `assert`s that use a clock reading."""
        lines = set()
        for function in self.functions:
            bound = self._bindings(function)
            asserts = (n for n in ast.walk(function) if isinstance(n, ast.Assert))
            lines |= {n.lineno for n in asserts if _any(self._shape(n.test, bound))}
        return sorted(lines)

    def _is_clock(self, call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Name):
            return func.id in self.clocks
        return (
            isinstance(func, ast.Attribute)
            and func.attr in CLOCKS
            and isinstance(func.value, ast.Name)
            and func.value.id in self.time_modules
        )

    def _shape(self, node: ast.expr, bound: dict[str, Shape]) -> Shape:
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self._shape(member, bound) for member in node.elts)
        if isinstance(node, ast.Name):
            return bound.get(node.id, False)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.returns:
            return self.returns[node.func.id]
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            whole, at = self._shape(node.value, bound), node.slice.value
            if isinstance(whole, tuple) and isinstance(at, int) and -len(whole) <= at < len(whole):
                return whole[at]
            return _any(whole)
        return any(
            (isinstance(n, ast.Call) and self._is_clock(n))
            or (isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and _any(bound.get(n.id, False)))
            for n in ast.walk(node)
        )

    def _bindings(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Shape]:
        """Each name of `function` bound to a clock-derived value; parameters named after a
        fixture take what that fixture returns."""
        bound: dict[str, Shape] = {a.arg: self.returns[a.arg] for a in function.args.args if a.arg in self.returns}
        changed = True
        while changed:  # until no assignment adds anything (a loop may feed an earlier line)
            before = dict(bound)
            for node in ast.walk(function):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._bind(bound, target, self._shape(node.value, bound))
                elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and node.value is not None:
                    self._bind(bound, node.target, self._shape(node.value, bound))
            changed = bound != before
        return bound

    def _bind(self, bound: dict[str, Shape], target: ast.expr, shape: Shape) -> None:
        if isinstance(target, ast.Name):
            bound[target.id] = _merge(bound[target.id], shape) if target.id in bound else shape
        elif isinstance(target, ast.Tuple | ast.List):
            members = shape if isinstance(shape, tuple) and len(shape) == len(target.elts) else None
            for at, member in enumerate(target.elts):
                self._bind(bound, member, members[at] if members else _any(shape))
        elif isinstance(target, ast.Starred):
            self._bind(bound, target.value, _any(shape))

    def _returned(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> Shape:
        bound = self._bindings(function)
        values = [n.value for n in ast.walk(function) if isinstance(n, ast.Return | ast.Yield) and n.value is not None]
        return functools.reduce(_merge, [self._shape(value, bound) for value in values]) if values else False


def timing_asserts(source: str, inherited: dict[str, Shape] | None = None) -> list[int]:
    """Line numbers of the `assert`s in `source` that use a clock reading."""
    return _Module(ast.parse(source), inherited).timing_asserts()


def _conftest_returns() -> dict[str, Shape]:
    return _Module(ast.parse((TESTS / "conftest.py").read_text(encoding="utf-8"))).returns


def test_no_test_asserts_on_elapsed_time() -> None:
    inherited = _conftest_returns()
    found = [
        f"{path.name}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in timing_asserts(path.read_text(encoding="utf-8"), inherited)
    ]
    assert found == [], "assertions on a clock (measure speed in bench/; bound waits with tests.polling)"


# Planted modules; `# flagged` marks each line the walk must report, and only those.
PLANTED = {
    # The shape of the assertion that failed at 5.6 s and 6.6 s on a loaded machine.
    "a fixture's duration": """
        import time

        import pytest


        @pytest.fixture(scope="module")
        def data(tmp_path_factory):
            root = tmp_path_factory.mktemp("generated")
            started = time.perf_counter()
            summary = generate(root)
            return root, summary, time.perf_counter() - started


        def test_default_size_is_fast(data):
            _, summary, seconds = data
            assert seconds < 5.0  # flagged
            assert 1200 < summary.subject_rows < 1400


        def test_summary(data):
            data_dir, summary, _ = data
            assert summary.rows == len(list(data_dir.iterdir()))
            assert data[2] < 9  # flagged
    """,
    "direct readings and aliases": """
        import time as clock
        from time import monotonic as now


        def test_direct():
            begin = clock.perf_counter_ns()
            run()
            assert clock.perf_counter_ns() - begin < 10**9  # flagged


        def test_through_names_and_a_helper():
            start = now()
            run()
            elapsed = now() - start
            took = round(elapsed, 1)
            assert took < 2, "too slow"  # flagged
            assert seconds_since(start) < 2  # flagged


        def seconds_since(start):
            return now() - start
    """,
    "what is allowed": """
        import time

        from tests.polling import wait_until


        def test_waits_and_prints():
            started = time.monotonic()
            deadline = time.monotonic() + 120
            while not ready():
                if time.monotonic() > deadline:
                    raise AssertionError("never ready")
            wait_until(ready, "ready")
            print(f"took {time.monotonic() - started:.1f}s")
            assert ready()
    """,
}


@pytest.mark.parametrize("name", PLANTED)
def test_the_walk_flags_exactly_the_planted_timing_asserts(name: str) -> None:
    source = textwrap.dedent(PLANTED[name])
    expected = [n for n, line in enumerate(source.splitlines(), start=1) if line.endswith("# flagged")]
    assert timing_asserts(source) == expected
