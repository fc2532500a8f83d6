"""Mutation testing of the modules that keep secrets out of the trail and tell the truth (``scripts/mutation``).

Two kinds of mutants, one score per module:

* function bodies: mutmut (configured in ``pyproject.toml`` ``[tool.mutmut]``), which copies the tree into
  ``mutants/`` and runs, per mutant, the tests that call the mutated function;
* module-level rules (deny-lists, vendor patterns, tables, limits): ``scripts/mutation_rules.py``.

A mutant is *killed* when a test fails on it, *survived* when every test passes: that rule can be weakened
unnoticed. Mutants that cannot change behaviour are marked equivalent (with the reason) and do not count.
The score is killed / (all - equivalent); the goal is at least ``--fail-under`` (90) % per module.

Usage::

    scripts/mutation                          # every module, both kinds
    scripts/mutation detectors identity       # some modules
    scripts/mutation --changed-since origin/main --time-cap 600   # CI: the modules a change touched
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutation_rules  # a sibling script, not a package

ROOT = mutation_rules.ROOT

_ROUTING_RULES = "tests/capture/test_routing_rules.py"
# Short name -> (module file, the test files that state its rules). Each mutant runs only these.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "detectors": ("audit_middleware/redaction/detectors.py", ("tests/redaction/",)),
    "redactor": ("audit_middleware/redaction/redactor.py", ("tests/redaction/",)),
    "urls": ("audit_middleware/redaction/urls.py", ("tests/redaction/",)),
    "bodies": ("audit_middleware/redaction/bodies.py", ("tests/redaction/",)),
    "identity": ("audit_middleware/capture/identity.py", ("tests/capture/test_identity.py",)),
    "routing": ("audit_middleware/capture/routing.py", ("tests/capture/test_routing.py", _ROUTING_RULES)),
    "preset": (
        "audit_middleware/capture/preset.py",
        (
            "tests/capture/test_preset.py",
            "tests/capture/test_auth_paths.py",
            "tests/capture/test_routing.py",
            _ROUTING_RULES,
        ),
    ),
    "records": ("audit_middleware/writer/records.py", ("tests/writer/test_records.py",)),
}

_UNINDEXED = "an index hint: an unindexed route is tried for every path; the first declared match still wins"
# Function-body mutants (mutmut) that cannot change behaviour: (module:function, a fragment of the change
# "old => new", the reason). Matched on the changed line, not on mutmut's numbered names, which shift with edits.
EQUIVALENT_BODIES: tuple[tuple[str, str, str], ...] = (
    ("detectors:_scheme_credentials", "secret = False => secret = None", "None and False are both falsy"),
    ("detectors:luhn_valid", "if value > 9: => if value >= 9:", "a doubled digit is even: never 9"),
    ("detectors:luhn_valid", "total += value => total -= value", "-t % 10 == 0 exactly when t % 10 == 0"),
    ("detectors:is_card_number", '"XX23456XX"', "digits[0] is a digit: an added X never matches"),
    ("detectors:mask_secrets", "_SHORTEST_VENDOR_KEY or _VENDOR_GATE", "a gate: without a prefix no key matches"),
    ("detectors:mask_secrets", "if len(data) + len(data.translate", "a gate: the card pattern needs 13 digits"),
    ("identity:forwarded_for", "if position >= end: => if position > end:", "the next turn returns the same hops"),
    ("identity:forwarded_for", "malformed = False => malformed = None", "None and False are both falsy"),
    ("identity:forwarded_for", "comma <= 0", "a comma at 0 ends an element before any pair: never reached"),
    ("identity:forwarded_for", "comma < 1", "a comma at 0 ends an element before any pair: never reached"),
    ("identity:parse_hop", "if end < 0: => if end <= 0:", 'the value starts with "[": "]" is never at 0'),
    ("identity:parse_hop", "if end < 0: => if end < 1:", 'the value starts with "[": "]" is never at 0'),
    ("identity:parse_hop", 'value.rpartition(":")', 'only reached with exactly one ":"'),
    ("identity:parse_hop", 'value.rfind("]")', "a second ] is refused either way"),
    ("identity:user_id_of", '"is_authenticated", None) is False', "neither default is False"),
    ("identity:user_id_of", "value = getattr(user, attr, )", "the AttributeError is caught: the next one is tried"),
    ("identity:user_from_response", '"XXXX")', '"json" is in neither default'),
    ("identity:user_from_response", '.rpartition("=")[2]', "a JWT has no = (base64url without padding)"),
    ("identity:_loads", "orjson.loads(None)", "orjson refuses None with a ValueError: the stdlib parses the body"),
    ("identity:TrustedProxies.__contains__", "not self._networks and not isinstance", "ip_address refuses a non-str"),
    ("identity:_jwt_sub", "(+len(m.group(1)) % 4", "excess base64 padding is ignored"),
    # routing's index hints (by last literal, by the literal before a last parameter): a route left unindexed
    # goes to the generic list, tried for every path, and _first still returns the first declared match
    *(("routing:_compile_path", f"kinds.append({kind})", _UNINDEXED) for kind in ("None", '"XXrestXX"', '"REST"')),
    *(("routing:_compile_path", f"else {kind}", _UNINDEXED) for kind in ('"XXlitXX")', '"LIT")')),
    *(
        ("routing:_compile_path", f"kinds.append({kind}", _UNINDEXED)
        for kind in ('"XXrestXX" if', '"REST" if', '"rest" if (conv_path) or True')
    ),
    ("routing:_compile_path", '"dyn" if (dynamic) or True', _UNINDEXED),
    *(("routing:_compile_path", f"else {kind} if dynamic", _UNINDEXED) for kind in ('"XXdynXX"', '"DYN"')),
    ("routing:_compile_path", "=> last = None", _UNINDEXED),
    ("routing:_compile_path", 'kinds[-1] == "lit") and False', _UNINDEXED),
    *(("routing:_compile_path", f"kinds[-1] == {kind} else None", _UNINDEXED) for kind in ('"XXlitXX"', '"LIT"')),
    ("routing:_compile_path", "=> before = None", _UNINDEXED),
    ("routing:_compile_path", 'kinds[-2] == "lit") and False', _UNINDEXED),
    ("routing:_compile_path", "if len(segments) > 2 and", _UNINDEXED),
    ("routing:_compile_path", "if len(segments) >= 3 and", _UNINDEXED),
    ("routing:_compile_path", 'kinds[-2] == "dyn" and kinds[-2] == "lit"', _UNINDEXED),
    *(("routing:_compile_path", f"kinds[-1] == {kind} and", _UNINDEXED) for kind in ('"XXdynXX"', '"DYN"')),
    *(("routing:_compile_path", f"kinds[-2] == {kind} else", _UNINDEXED) for kind in ('"XXlitXX"', '"LIT"')),
    ("routing:_compile_path", "dynamic = conv_path = True", _UNINDEXED),
    ("routing:_compile_path", "dynamic = conv_path = None", "None and False are both falsy"),
    ("routing:_compile_path", "pos = 0 => pos = None", "seg[None:k] is seg[0:k]"),
    ("routing:compile_routes", "result._add(route, None, before)", _UNINDEXED),
    ("routing:compile_routes", "result._add(route, last, None)", _UNINDEXED),
    ("routing:_first", "route.index >= best[0].index", "route indexes are unique: never equal"),
    ("routing:RouteTable._match", "if self._by_before or cut > 0", "an empty index finds nothing"),
    ("routing:RouteTable._match", "cut >= 0", 'at cut 0 the segment before is "": no route is indexed under it'),
    ("routing:RouteTable._match", "cut > 1", 'a normalised path has no "/" at 1 ("//" is collapsed)'),
    ("routing:RouteTable._match", 'path.rfind("/", None, cut)', "None means 0"),
    ("routing:RouteTable.match", "cache = self._cache.get(method) => cache = None", "a cache: recomputed the same"),
    ("routing:RouteTable.match", "self._cache.get(None)", "a cache: recomputed the same"),
    ("preset:_parent", "len(segments) >= word_from_end + 1", 'segments[0] is the "" before the leading /: no parent'),
    ("preset:_parent", "len(segments) > word_from_end - 1", 'segments[0] is the "" before the leading /: no parent'),
    ("preset:_get_logout", "300 <= status <= 400", "a 400 was refused on the line above"),
    ("preset:_get_logout", "300 <= status < 401", "a 400 was refused on the line above"),
    ("records:_float", "value >= 0", "only reached with an infinity"),
    ("records:_float", "value > 1", "only reached with an infinity"),
    ("records:_refuse", "raise TypeError(", "the message is never read: any TypeError takes the slow path"),
    ("records:_to_row", "and len(action) < MAX_ACTION_LENGTH", "the slow path gives the same row"),
    ("records:_to_row", "type(None) is str", "the slow path gives the same row"),
    ("records:_to_row", "type(None) is dict", "the slow path gives the same row"),
    ("records:_to_row", "if (type(action) is str) and False", "str(to_json_value(s)) of a str is the same str"),
    ("records:encode_metadata", 'and (b"null" not in data and orjson', "without a null the slow path is the same"),
    ("records:encode_metadata", "cleaned = {", "unreachable: a Mapping always converts to a dict"),
    ("records:encode_metadata", "cleaned = None", "unreachable: a Mapping always converts to a dict"),
    ("records:encode_metadata", "default=None, option", "without default= orjson raises the same TypeError"),
    ("records:encode_metadata", "orjson.dumps(metadata, option=", "without default= orjson raises the same TypeError"),
    ("records:_unreadable", "user_id, user_ref = None, None => ", "only reached when _user raises: it never does"),
    ("urls:_redact_pairs", "errors=None)", "None means the default, replace"),
    ("urls:_redact_pairs", "unquote_plus(name, ))", "the default is replace"),
    ("urls:mask_template", 'template.strip("XX/XX")', "the root template has no X: the same single part"),
    ("urls:mask_template", '["XXXX"]', "the root template has no parameter either way"),
    ("urls:mask_template", '(template.strip("/")) or True', 'splitting "/" gives the same single part'),
    ("urls:redact_url", '"XX/XX" not in scheme', "a scheme never holds XX/XX"),
    ("redactor:Redactor._mask", "fields: bool = False", "every caller passes fields"),
    ("redactor:Redactor._embedded_field", "value.strip(None) == REDACTED", "re-masking [REDACTED] gives the same"),
    ("redactor:Redactor._embedded_field", 'value.strip("XX', "re-masking [REDACTED] gives the same"),
    ("redactor:Redactor._embedded_pair", "errors=None)", "None means the default, replace"),
    ("redactor:Redactor._embedded_pair", "unquote_plus(match.group(2), ))", "the default is replace"),
    ("redactor:Redactor.__init__", 'norm.strip("XX*XX")', "normalised keys are lower-case: no X"),
    ("redactor:Redactor.headers", "if (len(values) == 1) and False", "joining one value gives that value"),
    ("redactor:Redactor.path", "fields=None)", "None and False are both falsy"),
    ("redactor:Redactor.path", "trailing = len(segments) >= 2", 'only "/" has two segments: "/" either way'),
    ("redactor:Redactor.query", "self._walk(fields, 0, None)", "keep is not read for a dict"),
    ("redactor:Redactor.query", "self._walk(fields, 0, False)", "keep is not read for a dict"),
    ("redactor:Redactor.text", "if type(value) is not str or not isinstance", "str() of a str has the same text"),
    ("redactor:Redactor.text", "if type(None) is not str and not isinstance", "str() of a str has the same text"),
    ("redactor:Redactor.text", "if len(value) >= self._window:", "a cut at the window's own length is no cut"),
    ("redactor:Redactor.text", "value = self._mask(value, None)", "None and False are both falsy"),
    ("redactor:Redactor.text", "if len(value) < self._max_string and value", "the slow path gives the same text"),
    ("redactor:Redactor._key", "raw = key if", "str() of a str has the same text"),
    ("redactor:Redactor._walk", "10 * 12 <= value", "is_card_number needs 13 digits"),
    ("redactor:Redactor._walk", "10**12 < value", "10**12 starts with 1: no card"),
    ("redactor:Redactor._walk", "value <= 10**19", "10**19 has 20 digits: no card"),
    ("redactor:Redactor._walk", "value < 11**19", "is_card_number refuses 20 digits"),
    ("redactor:Redactor._walk", "value < 10**20", "is_card_number refuses 20 digits"),
)
_CACHES = ("self._cache", "self._keys", "self._media", "cache", "_KEY_CACHE_SIZE", "_HEADER_CACHE_SIZE")
_CACHED_FUNCTIONS = ("Redactor.is_sensitive_key", "Redactor._key", "Redactor._media_text", "Redactor.headers")
_CODECS = {'"UTF-8"': '"utf-8"', '"UTF-16"': '"utf-16"', '"LATIN-1"': '"latin-1"'}


def equivalent_body(change: str) -> str | None:
    """The reason a function-body mutant cannot change behaviour, or None."""
    where, _, text = change.partition(": ")
    old, _, new = text.partition(" => ")
    for place, fragment, reason in EQUIVALENT_BODIES:
        if where == place and fragment in text:
            return reason
    cached = where.split(":")[1] in _CACHED_FUNCTIONS
    if cached and any(name in old for name in _CACHES):
        return "a cache: a miss recomputes the same answer"
    for upper, lower in _CODECS.items():
        new = new.replace(upper, lower)
    return "codec names are case-insensitive" if new == old else None


_KILLED_CODES = {1, 3, 36, 37, -24, 24, 152, 255, -11, -9}  # a failing test, a timeout or a crash all notice
_SURVIVED_CODES = {0}
_NO_TESTS_CODES = {5, 33}


@dataclass(slots=True)
class Score:
    """Counts of one module and kind."""

    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    unchecked: int = 0  # no test reaches it, or the time cap came first
    survivors: list[str] = field(default_factory=list)

    @property
    def counted(self) -> int:
        return self.killed + self.survived

    @property
    def percent(self) -> float | None:
        return None if not self.counted else 100.0 * self.killed / self.counted


# -- which modules ------------------------------------------------------------------------------------


def changed_modules(base: str) -> list[str]:
    """Short names of the modules whose file, or whose tests, changed since ``base`` (committed or not)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "audit_middleware", "tests", "scripts/mutation_rules.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "audit_middleware", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    changed = set(out) | set(untracked)
    if "scripts/mutation_rules.py" in changed:
        return list(MODULES)
    return [
        name
        for name, (module, tests) in MODULES.items()
        if module in changed or any(path.startswith(test) or path == test for path in changed for test in tests)
    ]


# -- mutmut ---------------------------------------------------------------------------------------------


def run_mutmut(names: list[str], workers: int, deadline: float) -> bool:
    """Run mutmut over the named modules' functions; False when the time cap stopped it."""
    globs = [MODULES[name][0].removesuffix(".py").replace("/", ".") + ".*" for name in names]
    every = len(names) == len(MODULES)
    command = [str(ROOT / ".venv/bin/mutmut"), "run", "--max-children", str(workers), *([] if every else globs)]
    remaining = max(1.0, deadline - time.monotonic())
    log = ROOT / "mutants" / "mutmut.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)  # mutmut saves what it has on an interrupt
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return False
    if code != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"mutmut failed (exit {code}); the log is {log}")
    return True


def _readable(function: str) -> str:
    """``xǁRedactorǁtext__mutmut_3`` -> ``Redactor.text``; ``x__fold__mutmut_1`` -> ``_fold``."""
    base = function.rsplit("__mutmut_", 1)[0]
    if base.startswith("xǁ"):
        return ".".join(part for part in base[2:].split("ǁ") if part)
    return base.removeprefix("x_")


def _functions(source: str) -> dict[str, str]:
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            found[node.name] = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    return found


def _change(functions: dict[str, str], name: str) -> str:
    """The changed line(s) of a mutant, ``old => new``."""
    original = functions.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    mutated = functions.get(name, "").replace(name, name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", 1)
    old, new = [], []
    for line in difflib.unified_diff(original.splitlines(), mutated.splitlines(), n=0, lineterm=""):
        if line.startswith("-") and not line.startswith("---"):
            old.append(line[1:].strip())
        elif line.startswith("+") and not line.startswith("+++"):
            new.append(line[1:].strip())
    return f"{' / '.join(old)} => {' / '.join(new)}"


def mutmut_scores(names: list[str]) -> dict[str, Score]:
    """Per module: mutmut's verdicts read from ``mutants/<module>.meta``, equivalents applied."""
    scores: dict[str, Score] = {}
    for name in names:
        module = MODULES[name][0]
        score = scores[name] = Score()
        meta = ROOT / "mutants" / (module + ".meta")
        if not meta.exists():
            continue
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        functions = _functions((ROOT / "mutants" / module).read_text("utf-8"))
        for key, code in sorted(codes.items()):
            function = key.rsplit(".", 1)[1]
            change = f"{name}:{_readable(function)}: {_change(functions, function)}"
            if code in _KILLED_CODES:
                score.killed += 1  # (a mutant listed as equivalent but killed is counted killed: the list is wrong)
            elif equivalent_body(change) is not None:
                score.equivalent += 1
            elif code in _SURVIVED_CODES:
                score.survived += 1
                score.survivors.append(change)
            else:
                score.unchecked += 1
                if code in _NO_TESTS_CODES:
                    score.survivors.append(f"(no test reaches it) {change}")
    return scores


# -- rules ------------------------------------------------------------------------------------------------


def rule_scores(names: list[str], workers: int, deadline: float) -> dict[str, Score]:
    """Per module: the module-level rule mutants, each run against the module's tests."""
    tests_of = {MODULES[name][0]: MODULES[name][1] for name in names}
    mutation_rules.preload(sorted({test for tests in tests_of.values() for test in tests}))
    scores: dict[str, Score] = {}
    jobs: list[tuple[mutation_rules.Mutant, str]] = []
    for name in names:
        module, tests = MODULES[name]
        scores[name] = Score()
        if not mutation_rules.clean_run(module, tests):
            raise SystemExit(f"the tests of {module} fail without any mutant: {' '.join(tests)}")
        jobs.extend(mutation_rules.mutants_of(module))
    by_module = {MODULES[name][0]: name for name in names}
    results = mutation_rules.run(jobs, tests_of, workers=workers, deadline=deadline)
    done = {result.mutant.id for result in results}
    for result in results:
        score = scores[by_module[result.mutant.module]]
        if result.status == "equivalent":
            score.equivalent += 1
        elif result.status == "survived":
            score.survived += 1
            score.survivors.append(f"{result.mutant.id}  (line {result.mutant.line})")
        else:
            score.killed += 1
    for mutant, _ in jobs:
        if mutant.id not in done:
            scores[by_module[mutant.module]].unchecked += 1
    return scores


# -- report -----------------------------------------------------------------------------------------------


def _cell(score: Score | None) -> str:
    if score is None:
        return "-"
    if score.percent is None:
        return "no mutants" if not score.unchecked else f"{score.unchecked} unchecked"
    text = f"{score.percent:5.1f}% ({score.killed}/{score.counted})"
    if score.equivalent:
        text += f" +{score.equivalent} eq"
    if score.unchecked:
        text += f" {score.unchecked} unchecked"
    return text


def report(names: list[str], bodies: dict[str, Score], rules: dict[str, Score], fail_under: float) -> bool:
    """Print the table and the survivors; True when every module reaches ``fail_under``."""
    print()
    print(f"{'module':<10} {'function bodies (mutmut)':<36} {'module-level rules':<36} total")
    ok = True
    for name in names:
        body, rule = bodies.get(name), rules.get(name)
        killed = sum(s.killed for s in (body, rule) if s is not None)
        counted = sum(s.counted for s in (body, rule) if s is not None)
        total = 100.0 * killed / counted if counted else 100.0
        below = any(s is not None and s.percent is not None and s.percent < fail_under for s in (body, rule))
        ok = ok and not below
        flag = "  BELOW GOAL" if below else ""
        print(f"{name:<10} {_cell(body):<36} {_cell(rule):<36} {total:5.1f}%{flag}")
    for name in names:
        survivors = [
            *(bodies[name].survivors if name in bodies else []),
            *(rules[name].survivors if name in rules else []),
        ]
        if survivors:
            print(f"\nsurvivors in {MODULES[name][0]}:")
            for line in survivors:
                print(f"  {line}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], metavar="module", help=", ".join(MODULES))
    parser.add_argument("--changed-since", metavar="REF", help="only modules whose file or tests changed since REF")
    parser.add_argument("--time-cap", type=float, default=None, metavar="SECONDS", help="stop starting mutants then")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--fail-under", type=float, default=90.0, metavar="PERCENT")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--rules-only", action="store_true", help="only the module-level rules (no mutmut)")
    kind.add_argument("--bodies-only", action="store_true", help="only mutmut's function-body mutants")
    parser.add_argument("--fresh", action="store_true", help="forget mutmut's cached results (mutants/)")
    args = parser.parse_args(argv)
    names: list[str] = list(args.modules) or list(MODULES)
    if args.changed_since:
        changed = set(changed_modules(args.changed_since))
        names = [name for name in names if name in changed]
        if not names:
            print(f"no mutated module or its tests changed since {args.changed_since}: nothing to do")
            return 0
    started = time.monotonic()
    deadline = started + args.time_cap if args.time_cap else float("inf")
    print(f"mutation testing: {', '.join(names)}")
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    bodies: dict[str, Score] = {}
    rules: dict[str, Score] = {}
    complete = True
    if not args.rules_only:
        # mutmut gets the larger share of the time cap: it has about ten times the mutants
        share = started + 0.7 * (deadline - started) if args.time_cap and not args.bodies_only else deadline
        complete = run_mutmut(names, args.workers, share)
        bodies = mutmut_scores(names)
    if not args.bodies_only:
        rules = rule_scores(names, args.workers, deadline)
        complete = complete and not any(score.unchecked for score in rules.values())
    ok = report(names, bodies, rules, args.fail_under)
    print(f"\n{time.monotonic() - started:.0f} s" + ("" if complete else "; the time cap stopped it before the end"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
