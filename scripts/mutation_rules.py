"""Mutation testing of module-level rules: the deny-lists, patterns, tables and limits that mutmut does not reach.

mutmut mutates function bodies (it swaps each function for a trampoline); the constants a module defines at import
time (``DEFAULT_DENY_KEYS``, ``_VENDOR_KEY``, ``MAX_ACTION_LENGTH``, ``PRESET_TABLE``) are left alone, and they are
where most of the secret-keeping rules live. This helper makes one mutant per weakening of such a rule:

* one element deleted from a set, tuple, list or dict literal (a deny-list word, a preset row, a header stem);
* a number shifted by one either way (a limit, a length gate), a ``True``/``False`` flipped;
* a comparison flipped (``<`` / ``<=``, ``==`` / ``!=``, ``in`` / ``not in``);
* in a string passed to ``re.compile``: one alternative of a ``|`` dropped (a provider of the vendor-key
  pattern), a repetition bound made stricter by one (``{16,}`` -> ``{17,}``: the shortest key no longer
  matches).

Each mutant is the module's source rewritten (``ast.unparse``) and imported in place of the real module in a
forked pytest run of that module's test files (``-x``, first failure stops it). A mutant that no test notices
*survived*: the rule can be weakened unnoticed. Mutants that cannot change behaviour are listed in
:data:`EQUIVALENT` with the reason, and do not count.

Run by ``scripts/mutation`` (``--rules-only`` there runs this part alone); run alone, it lists the mutants.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import select
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent

_COVERED_BY_STEM = "also denied by a stem that the key contains (password, token, secret, cookie, apikey, cardnumber)"
_KEYS_COVERED_BY_STEMS = (
    "accesstoken", "authtoken", "clientsecret", "currentpassword", "idtoken", "newpassword", "oldpassword",
    "passwordconfirmation", "refreshtoken", "setcookie", "xapikey", "cardnumber",
)  # fmt: skip
_COVERED_BY_CVV = "the key splitter reads cvv2/cvc2 as cvv/cvc + 2: the word cvv/cvc already denies it"

_MULTIPART_LOGS_AT_MOST_ERROR = "python-multipart logs at most at ERROR (40): levels 50, 51 and 52 all silence it"

# Mutants that cannot change what is stored, by id (see ``Mutant.id``), with the reason.
EQUIVALENT: dict[str, str] = {
    "detectors:DEFAULT_DENY_WORDS:-'cvv2'": _COVERED_BY_CVV,
    "detectors:DEFAULT_DENY_WORDS:-'cvc2'": _COVERED_BY_CVV,
    **{f"detectors:DEFAULT_DENY_KEYS:-{key!r}": _COVERED_BY_STEM for key in _KEYS_COVERED_BY_STEMS},
    "detectors:DEFAULT_DENY_KEYS:-'ssn'": "also a deny word (DEFAULT_DENY_WORDS): the key ssn is its only word",
    "detectors:_WORDS:-alternative '\\\\d+'": "no deny word is made of digits: digit runs change no verdict",
    "detectors:_MIN_CARD_DIGITS:13 -> 12": "a gate only: the card pattern needs 13 digits",
    "detectors:_SHORTEST_SLACK_TOKEN:15 -> 14": "a gate only: no provider key is shorter than 15",
    "detectors:_JWT:-Za-z0-9_\\-]{4,} -> {5,}": "the shortest real JWT header is 16 characters after eyJ",
    "detectors:_JWT:-Za-z0-9_\\-]{4,} -> {5,} #2": "a 4-character payload is 3 bytes: no JSON claim",
    "identity:_JWT:A-Za-z0-9_-]{2,} -> {3,}": "a first segment of 2 base64 characters is 1 byte: no JWT header",
    "identity:_JWT:A-Za-z0-9_-]{2,} -> {3,} #2": "a 2-character payload is 1 byte: no JSON claim",
    "redactor:_SHORTEST_SCAN:13 -> 12": "a gate: under 13 only text with =, :, eyJ or a space can match",
    "records:_dumps:False -> True #2": "allow_nan: NaN and the infinities are converted to strings before encoding",
    "routing:CACHE_SIZE:4096 -> 4095": "a cache bound: a result is recomputed the same",
    "preset:PRESET_TABLE:-('POST **/jwt/refresh', 'token_refresh', {}, 'JWT refresh')": (
        "POST **/refresh then matches: its auth parent jwt corroborates every path this row matches"
    ),
    "bodies:_QUIET:1 -> 2": _MULTIPART_LOGS_AT_MOST_ERROR,
    "bodies:_QUIET:1 -> 0": _MULTIPART_LOGS_AT_MOST_ERROR,
    "redactor:_KEY_CACHE_SIZE:4096 -> 4097": "a cache bound: a result is recomputed the same",
    "redactor:_KEY_CACHE_SIZE:4096 -> 4095": "a cache bound: a result is recomputed the same",
    "redactor:_HEADER_CACHE_SIZE:1024 -> 1025": "a cache bound: a result is recomputed the same",
    "redactor:_HEADER_CACHE_SIZE:1024 -> 1023": "a cache bound: a result is recomputed the same",
    "redactor:_CACHED_HEADER_BYTES:512 -> 513": "a cache bound: a result is recomputed the same",
    "redactor:_CACHED_HEADER_BYTES:512 -> 511": "a cache bound: a result is recomputed the same",
}

_FLIPPED_COMPARE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BOUND = re.compile(r"\{(\d+)(,?)(\d*)\}")


@dataclasses.dataclass(frozen=True, slots=True)
class Mutant:
    """One weakened rule: where it is, what changed, and the mutated module source."""

    module: str  # file path relative to the root, e.g. audit_middleware/redaction/detectors.py
    name: str  # the assigned name (DEFAULT_DENY_WORDS)
    change: str  # what changed, readable ("-'hotp'", "13 -> 14", "-alternative 'ASIA'")
    line: int

    @property
    def id(self) -> str:
        """A stable id: survives edits elsewhere in the module (used by EQUIVALENT)."""
        return f"{Path(self.module).stem}:{self.name}:{self.change}"


# -- generation ---------------------------------------------------------------------------------------


def _targets(statement: ast.stmt) -> tuple[str, ast.expr] | None:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
        if isinstance(target, ast.Name):
            return target.id, statement.value
        return None  # tuple unpacking (``_DENIED, _KEPT, _HIDDEN = 0, 1, 2``): sentinels, not rules
    if isinstance(statement, ast.AnnAssign) and statement.value is not None and isinstance(statement.target, ast.Name):
        return statement.target.id, statement.value
    return None


def _is_row(node: ast.expr, parent: ast.AST | None) -> bool:
    """A tuple that is one row of a table of same-length tuples: deleting a field only breaks unpacking."""
    if not isinstance(node, ast.Tuple) or not isinstance(parent, ast.Tuple | ast.List):
        return False
    return all(isinstance(e, ast.Tuple) and len(e.elts) == len(node.elts) for e in parent.elts)


def _number(node: ast.expr) -> int | float | None:
    """The value of a numeric constant expression (``64 * 1024``, ``10**12``), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Pow | ast.Add | ast.Sub):
        left, right = _number(node.left), _number(node.right)
        if left is not None and right is not None:
            value = eval(compile(ast.Expression(node), "<number>", "eval"), {"__builtins__": {}})  # constants only
            return value if isinstance(value, int | float) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    return None


def regex_alternatives(pattern: str) -> list[tuple[int, int]]:
    """The (start, end) spans of every alternative of every ``|`` in ``pattern``, the ``|`` included.

    The span of a branch takes the ``|`` before it (or after it, for a group's first branch), so removing
    it leaves a well-formed pattern with one branch fewer.
    """
    groups: list[list[int]] = [[-1]]  # per open group: positions of its "|" (the first entry: the group's start)
    spans: list[tuple[int, int]] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]" or pattern[index - 1] == "["
        elif char == "[":
            in_class = True
            if pattern[index + 1 : index + 2] == "^":
                index += 1
            if pattern[index + 1 : index + 2] == "]":
                index += 1
        elif char == "(":
            start = index + 1
            if pattern[start : start + 1] == "?":  # (?:  (?=  (?<=  (?<!  (?i:  (?P<name>
                match = re.match(r"\?(?:[:=!]|<[=!]|P<\w+>|[aiLmsux-]+:)", pattern[start:])
                start += match.end() if match else 1
            groups.append([start - 1])
        elif char == ")":
            _close(groups.pop(), index, spans)
        elif char == "|":
            groups[-1].append(index)
        index += 1
    _close(groups.pop(), len(pattern), spans)
    return spans


def _close(bars: list[int], end: int, spans: list[tuple[int, int]]) -> None:
    if len(bars) < 2:
        return
    opening, *pipes = bars
    spans.append((opening + 1, pipes[0] + 1))  # the first branch and the "|" after it
    for number, pipe in enumerate(pipes):
        branch_end = pipes[number + 1] if number + 1 < len(pipes) else end
        spans.append((pipe, branch_end))  # a later branch and the "|" before it


def _regex_mutants(pattern: str) -> Iterator[tuple[str, str]]:
    for start, end in regex_alternatives(pattern):
        removed = pattern[start:end].strip("|")
        yield pattern[:start] + pattern[end:], f"-alternative {removed[:40]!r}"
    for match in _BOUND.finditer(pattern):
        low, comma, high = match.group(1), match.group(2), match.group(3)
        stricter = [f"{{{int(low) + 1}{comma}{high}}}"]
        if not comma:
            stricter.append(f"{{{int(low) - 1}}}")  # an exact length: both ways miss the real one
        elif high:
            stricter = [f"{{{int(low) + 1},{high}}}", f"{{{low},{int(high) - 1}}}"]
        for bound in stricter:
            context = pattern[max(0, match.start() - 12) : match.start()]
            yield pattern[: match.start()] + bound + pattern[match.end() :], f"{context}{match.group()} -> {bound}"


def _regex_strings(value: ast.expr) -> Iterator[ast.Constant]:
    """The string constants that form the pattern of a ``re.compile(...)`` call in ``value``."""
    for node in ast.walk(value):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "compile"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
        ):
            yield from _string_parts(node.args[0])


def _string_parts(node: ast.expr) -> Iterator[ast.Constant]:
    """The literal strings a pattern is made of (``r"..." + _ALT``), not those of calls inside it (a join's "|")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield from _string_parts(node.left)
        yield from _string_parts(node.right)


def _sites(value: ast.expr) -> Iterator[tuple[ast.AST, str]]:
    """Every node of ``value`` with the kind of mutation it takes (a pre-order walk, parents known)."""
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(value):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    regexes = {id(node) for node in _regex_strings(value)}
    seen_numbers: set[int] = set()
    for node in ast.walk(value):
        listed = isinstance(node, ast.Set | ast.List | ast.Tuple) and node.elts and not _is_row(node, parents.get(node))
        if listed or (isinstance(node, ast.Dict) and node.keys):
            yield node, "delete"
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, "bool"
        elif id(node) not in seen_numbers and _number(node) is not None:  # type: ignore[arg-type]
            seen_numbers.update(id(inner) for inner in ast.walk(node))  # 64 * 1024: shift the product only
            yield node, "number"
        if isinstance(node, ast.Compare):
            yield node, "compare"
        if id(node) in regexes:
            yield node, "regex"


def _describe(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def mutants_of(module: str, root: Path = ROOT) -> Iterator[tuple[Mutant, str]]:
    """Every rule mutant of ``module`` (a path relative to ``root``) with its mutated source."""
    source = (root / module).read_text("utf-8")
    tree = ast.parse(source)
    seen: dict[str, int] = {}
    for position, statement in enumerate(tree.body):
        found = _targets(statement)
        if found is None:
            continue
        name, _value = found
        if name.startswith("__"):
            continue  # __all__ and friends: exports, not rules (tests/test_exports.py pins them)
        for order, (node, kind) in enumerate(_sites(_value)):
            for mutated, change in _mutations(tree, position, order, node, kind):
                mutant = Mutant(module, name, change, getattr(node, "lineno", statement.lineno))
                count = seen.get(mutant.id, 0)
                seen[mutant.id] = count + 1
                if count:
                    mutant = dataclasses.replace(mutant, change=f"{change} #{count + 1}")
                yield mutant, mutated


def _mutations(tree: ast.Module, position: int, order: int, node: ast.AST, kind: str) -> Iterator[tuple[str, str]]:
    """(mutated source, change) for each mutation of the ``order``-th site of statement ``position``."""

    def fresh() -> tuple[ast.Module, ast.AST]:
        copied = copy.deepcopy(tree)
        found = _targets(copied.body[position])
        assert found is not None
        twin = list(_sites(found[1]))[order][0]
        return copied, twin

    if kind == "delete":
        count = len(node.keys) if isinstance(node, ast.Dict) else len(node.elts)  # type: ignore[attr-defined]
        for index in range(count):
            copied, twin = fresh()
            if isinstance(twin, ast.Dict):
                removed = f"-{_describe(twin.keys[index])}: ..."  # type: ignore[arg-type]
                del twin.keys[index], twin.values[index]
            else:
                removed = f"-{_describe(twin.elts[index])}"  # type: ignore[attr-defined]
                del twin.elts[index]  # type: ignore[attr-defined]
            yield ast.unparse(copied), removed
    elif kind == "bool":
        copied, twin = fresh()
        assert isinstance(twin, ast.Constant)
        twin.value = not twin.value
        yield ast.unparse(copied), f"{not twin.value} -> {twin.value}"
    elif kind == "number":
        value = _number(node)  # type: ignore[arg-type]
        for shifted in (value + 1, value - 1):  # type: ignore[operator]
            copied, twin = fresh()
            replacement = ast.Constant(shifted)
            _replace(copied, twin, replacement)
            yield ast.unparse(copied), f"{_describe(node)} -> {shifted}"
    elif kind == "compare":
        assert isinstance(node, ast.Compare)
        for index, op in enumerate(node.ops):
            flipped = _FLIPPED_COMPARE.get(type(op))
            if flipped is None:
                continue
            copied, twin = fresh()
            assert isinstance(twin, ast.Compare)
            twin.ops[index] = flipped()
            yield ast.unparse(copied), f"{type(op).__name__} -> {flipped.__name__} in {_describe(node)}"
    elif kind == "regex":
        assert isinstance(node, ast.Constant) and isinstance(node.value, str)
        for pattern, change in _regex_mutants(node.value):
            try:
                re.compile(pattern)
            except re.error:
                continue  # a fragment of a pattern built from several strings: judged whole below
            copied, twin = fresh()
            assert isinstance(twin, ast.Constant)
            twin.value = pattern
            yield ast.unparse(copied), change


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(item is old for item in value):
                value[[item is old for item in value].index(True)] = new
                return
    raise LookupError("node not found")  # pragma: no cover - the node was found in this tree


# -- running ------------------------------------------------------------------------------------------


class _MutatedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module's mutated source in place of its file (in the forked child only)."""

    def __init__(self, fullname: str, path: Path, source: str) -> None:
        self.fullname, self.path, self.source = fullname, path, source

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.fullname:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


@dataclasses.dataclass(slots=True)
class Result:
    mutant: Mutant
    status: str  # killed | survived | timeout | equivalent
    seconds: float


def _module_name(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _forget_project_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("audit_middleware", "tests"):
            del sys.modules[name]


def _child(module: str, source: str | None, tests: Sequence[str]) -> int:
    import pytest

    _forget_project_modules()
    if source is not None:
        sys.meta_path.insert(0, _MutatedModule(_module_name(module), ROOT / module, source))
    devnull = os.open(os.devnull, os.O_WRONLY)
    if not os.environ.get("MUTATION_DEBUG"):
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=--strict-markers --strict-config"]
    return int(pytest.main([*args, *(str(ROOT / test) for test in tests)]))


def _spawn(module: str, source: str | None, tests: Sequence[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 70
        try:
            code = _child(module, source, tests)
        finally:
            os._exit(code)
    return pid


def preload(tests: Sequence[str]) -> None:
    """Import what the tests import (pytest, the libraries) once, so each forked mutant run starts warm."""
    import pytest

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", *(str(ROOT / t) for t in tests)])
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    _forget_project_modules()


def run(
    jobs: Sequence[tuple[Mutant, str]],
    tests_of: dict[str, tuple[str, ...]],
    *,
    workers: int = 2,
    timeout: float = 60.0,
    deadline: float | None = None,
    progress: bool = True,
) -> list[Result]:
    """Run every mutant's tests in forked children, ``workers`` at a time; stop starting new ones at ``deadline``."""
    results: list[Result] = []
    pending = list(jobs)
    running: dict[int, tuple[Mutant, float]] = {}
    while pending or running:
        while pending and len(running) < workers and (deadline is None or time.monotonic() < deadline):
            mutant, source = pending.pop(0)
            if mutant.id in EQUIVALENT:
                results.append(Result(mutant, "equivalent", 0.0))
                continue
            running[_spawn(mutant.module, source, tests_of[mutant.module])] = (mutant, time.monotonic())
        if not running:
            break
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for child, (_, started) in list(running.items()):
                if now - started > timeout:
                    os.kill(child, 9)
            select.select([], [], [], 0.02)
            continue
        mutant, started = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        verdict = "survived" if code == 0 else "timeout" if code == -9 else "killed"
        results.append(Result(mutant, verdict, elapsed))
        if progress:
            mark = {"killed": ".", "survived": "S", "timeout": "T"}[verdict]
            print(mark, end="", flush=True)
    if progress:
        print()
    return results


def clean_run(module: str, tests: Sequence[str]) -> bool:
    """Whether the module's tests pass unmutated (else every mutant would look killed)."""
    _, status = os.waitpid(_spawn(module, None, tests), 0)
    return os.waitstatus_to_exitcode(status) == 0


def main(argv: Sequence[str] | None = None) -> int:
    """List the rule mutants of module files (``scripts/mutation`` runs them)."""
    parser = argparse.ArgumentParser(description="List the module-level rule mutants of module files.")
    parser.add_argument("modules", nargs="+", help="module files, e.g. audit_middleware/redaction/detectors.py")
    for module in parser.parse_args(argv).modules:
        for mutant, _ in mutants_of(module):
            note = f"  [equivalent: {EQUIVALENT[mutant.id]}]" if mutant.id in EQUIVALENT else ""
            print(f"{mutant.module}:{mutant.line}: {mutant.id}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
