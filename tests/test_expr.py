"""The ``condition_on`` language: every construct against an independent pandas mask.

Each expected mask is written by hand with pandas operators (never with ``DataFrame.query``
or ``eval``), so a wrong precedence or a wrong operator in the parser shows up. The last
part checks that nothing is ever evaluated: dangerous strings raise ``ValidationError``
and have no side effect.
"""

from __future__ import annotations

import ast
import builtins
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import causalflow as cf
from causalflow.expr import parse_condition

N = 40


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "a": np.round(rng.normal(size=N) * 3, 1),
        "b": np.round(rng.uniform(-2, 2, N), 1),
        "k": rng.integers(0, 5, N).astype(float),
        "dev": rng.choice(np.array(["web", "ios", "android", "it's"]), N).astype(object),
        "flag": rng.random(N) < 0.4,
    })


def mask_of(text: str, frame: pd.DataFrame) -> np.ndarray:
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    out = parse_condition(text).evaluate(columns)
    assert out.dtype == bool and out.shape == (len(frame),)
    return out


def check(text, expected, frame):
    expected = np.asarray(expected, dtype=bool)
    assert expected.any() and not expected.all(), f"weak test case: {text!r} selects all or nothing"
    np.testing.assert_array_equal(mask_of(text, frame), expected, err_msg=text)


CASES = {
    # arithmetic
    "a + b > 1": lambda f: (f.a + f.b) > 1,
    "a - b * 2 <= 0": lambda f: (f.a - (f.b * 2)) <= 0,
    "(a - b) * 2 <= 0.5": lambda f: ((f.a - f.b) * 2) <= 0.5,
    "a / 2 + 1 > b": lambda f: (f.a / 2 + 1) > f.b,
    "k % 2 == 1": lambda f: (f.k % 2) == 1,
    "a ** 2 > 4": lambda f: (f.a ** 2) > 4,
    "-a ** 2 < -4": lambda f: -(f.a ** 2) < -4,  # ** binds tighter than unary minus
    "2 ** k > 7": lambda f: (2 ** f.k) > 7,
    "-a > 1": lambda f: (-f.a) > 1,
    "+a > 1": lambda f: f.a > 1,
    "a - -b > 0": lambda f: (f.a + f.b) > 0,
    "a - b - 1 > 0": lambda f: ((f.a - f.b) - 1) > 0,  # left associative
    "k / 2 / 2 >= 0.5": lambda f: ((f.k / 2) / 2) >= 0.5,
    "a + b * k > 3": lambda f: (f.a + (f.b * f.k)) > 3,
    "1e0 * a > 2.5e-1": lambda f: f.a > 0.25,
    # comparisons, also chained and with the column on the right
    "a == 6.1 or b != 0.6 and k == 0": lambda f: (f.a == 6.1) | ((f.b != 0.6) & (f.k == 0)),
    "1 < a": lambda f: f.a > 1,
    "b >= 0": lambda f: f.b >= 0,
    "k != 2": lambda f: f.k != 2,
    "-1 < b < 1": lambda f: (f.b > -1) & (f.b < 1),
    "-1 < b <= a < 4": lambda f: (f.b > -1) & (f.b <= f.a) & (f.a < 4),
    "0 <= k == 2": lambda f: (f.k >= 0) & (f.k == 2),
    "a > b > -1": lambda f: (f.a > f.b) & (f.b > -1),
    # and / or / not and their precedence: not > and > or
    "a > 0 and b > 0": lambda f: (f.a > 0) & (f.b > 0),
    "a > 0 or b > 1": lambda f: (f.a > 0) | (f.b > 1),
    "a > 0 or b > 0 and k == 1": lambda f: (f.a > 0) | ((f.b > 0) & (f.k == 1)),
    "(a > 0 or b > 0) and k == 1": lambda f: ((f.a > 0) | (f.b > 0)) & (f.k == 1),
    "not a > 0 and b > 0": lambda f: (~(f.a > 0)) & (f.b > 0),
    "not (a > 0 and b > 0)": lambda f: ~((f.a > 0) & (f.b > 0)),
    "not not a > 0": lambda f: f.a > 0,
    "a > 0 and b > 0 and k > 1 or dev == 'web'": lambda f: ((f.a > 0) & (f.b > 0) & (f.k > 1)) | (f.dev == "web"),
    # in / not in lists of numbers, strings, booleans
    "dev in ['web', 'ios']": lambda f: f.dev.isin(["web", "ios"]),
    "dev not in ('web',)": lambda f: ~f.dev.isin(["web"]),
    "dev in {'android'}": lambda f: f.dev == "android",
    "k in [1, 3.0, -2]": lambda f: f.k.isin([1, 3, -2]),
    "k not in [0, 1] and a > 0": lambda f: (~f.k.isin([0, 1])) & (f.a > 0),
    "not dev in ['web']": lambda f: f.dev != "web",
    "flag in [True]": lambda f: f.flag,
    # strings, with both quote styles and an escaped quote
    "dev == 'web'": lambda f: f.dev == "web",
    'dev != "ios"': lambda f: f.dev != "ios",
    "dev == \"it's\"": lambda f: f.dev == "it's",
    "dev == 'it\\'s' or dev == 'web'": lambda f: f.dev.isin(["it's", "web"]),
    "dev > 'j'": lambda f: f.dev > "j",
    # booleans
    "flag": lambda f: f.flag,
    "not flag": lambda f: ~f.flag,
    "flag == True": lambda f: f.flag,
    "flag != True and a > 0": lambda f: (~f.flag) & (f.a > 0),
    "flag or a > 2": lambda f: f.flag | (f.a > 2),
    "False or flag": lambda f: f.flag,
    "True and b < 0": lambda f: f.b < 0,
    # white space and line breaks inside brackets
    "  (a > 0 and\n   b > 0)  ": lambda f: (f.a > 0) & (f.b > 0),
}


@pytest.mark.parametrize("text", list(CASES))
def test_condition_matches_pandas_mask(frame, text):
    check(text, CASES[text](frame), frame)


def test_parser_warnings_do_not_depend_on_the_callers_filters():
    import warnings

    columns = {"dev": np.array(["\\d", "web"], dtype=object)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # '\d' is an invalid escape: a parser warning
        # the user's text holds a backslash and a d inside the quotes
        np.testing.assert_array_equal(parse_condition(r"dev == '\d'").evaluate(columns), [True, False])
        # and an escaped backslash means the same string
        np.testing.assert_array_equal(parse_condition(r"dev == '\\d'").evaluate(columns), [True, False])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.lists(st.sampled_from(list("ab s()[]'\"+-*/%<>=!.,:019_\n") + ["and ", "or ", "not ", " in ",
                                                                              "**", "==", "lambda"]),
                     max_size=25).map("".join))
def test_any_text_parses_or_raises_validation_error(text):
    columns = {"a": np.array([1.0, -2.0]), "s": np.array(["x", "y"], dtype=object)}
    try:
        mask = parse_condition(text).evaluate(columns)
    except cf.ValidationError:
        return
    assert mask.dtype == bool and mask.shape == (2,)


def test_constant_conditions_broadcast(frame):
    assert mask_of("True", frame).all()
    assert not mask_of("1 > 2", frame).any()
    assert not mask_of("k in []", frame).any()


def test_columns_are_the_names_read():
    cond = parse_condition("dev in ['a', 'b'] and (x + y) * 2 > z or not w")
    assert cond.columns == frozenset({"dev", "x", "y", "z", "w"})
    assert parse_condition("'x' == 'x'").columns == frozenset()
    # the text is kept (stripped) as the label of the condition in result tables
    assert parse_condition("  x > 1 ").text == "x > 1"


def test_known_columns_gives_unknown_name_and_position():
    with pytest.raises(cf.ValidationError, match=r"position 10: unknown column 'qq'"):
        parse_condition("x > 0 and qq < 1", known_columns=["x"])
    # position counts characters of the text as given: leading blanks, line breaks, non-ASCII
    with pytest.raises(cf.ValidationError, match=r"position 16: unknown column 'qq'"):
        parse_condition("  größe > 0 and qq < 1", known_columns=["größe"])
    with pytest.raises(cf.ValidationError, match=r"position 15: unknown column 'qq'"):
        parse_condition("(größe > 0 and\nqq < 1)", known_columns=["größe"])


def test_evaluate_with_a_missing_column():
    with pytest.raises(cf.ValidationError, match="unknown column 'y'"):
        parse_condition("y > 1").evaluate({"x": np.zeros(3)})


@pytest.mark.parametrize("text, problem", [
    ("dev - 1 > 0", "arithmetic"),
    ("-dev == 'a'", "sign"),
    ("dev < 1", "cannot compare"),
    ("k / 0 > 1 and dev * dev == 'a'", "arithmetic"),
])
def test_type_errors_are_validation_errors(frame, text, problem):
    with pytest.raises(cf.ValidationError, match=problem):
        mask_of(text, frame)


def test_division_by_zero_follows_ieee(frame):
    # a / 0 is +-inf (nan for 0 / 0), as with pandas
    expected = (frame.a / 0) > 1
    check("a / 0 > 1", expected, frame)


def test_huge_numbers_are_bounded_not_computed(frame):
    # 9 ** 9 ** 9 as Python integers would need ~1.6 GB and minutes; as float64 it is inf
    np.testing.assert_array_equal(mask_of("9 ** 9 ** 9 > a", frame), np.ones(N, bool))
    with pytest.raises(cf.ValidationError, match="too large"):
        parse_condition("1" * 400 + " > a").evaluate({"a": frame.a.to_numpy()})


def test_deep_nesting_is_a_validation_error():
    with pytest.raises(cf.ValidationError, match="nested"):
        parse_condition("-" * 1500 + "x > 0")
    with pytest.raises(cf.ValidationError):
        parse_condition("(" * 300 + "x > 0" + ")" * 300)


# -- nothing is ever evaluated ------------------------------------------------------------
DANGEROUS = [
    "__import__('os').system('touch pwned')",
    "__import__('os').system('touch pwned') == 0",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('pwned', 'w')",
    "open('pwned', 'w').write('x') > 0",
    "exec('open(\"pwned\", \"w\")')",
    "eval('1') == 1",
    "globals()['os']",
    "x.__class__ == 1",
    "x > 0 and __builtins__['open']('pwned', 'w')",
    "(lambda: open('pwned', 'w'))()",
    "[open('pwned', 'w') for _ in [1]]",
    "import os",
    "x > 0; import os",
    "x > 0\nimport os",
    "__import__",
    "x > 0 or __loader__ == 1",
    "x in __builtins__",
    "x in [open('pwned', 'w')]",
    "x == [c for c in 'ab']",
    "(y := open('pwned', 'w'))",
    "f'{open(\"pwned\", \"w\")}' == 'x'",
    "x @ x > 0",
    "x // 1 > 0",
    "x if open('pwned', 'w') else x",
    "await x",
    "yield x",
]


@pytest.mark.parametrize("text", DANGEROUS)
def test_dangerous_strings_are_rejected_without_side_effects(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    real_compile = builtins.compile

    def spy(name):
        def forbidden(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"{name} must not be called")
        return forbidden

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse is compile(..., flags=PyCF_ONLY_AST): a tree, never code objects
        if not flags & ast.PyCF_ONLY_AST:
            calls.append("compile")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    with monkeypatch.context() as patch:
        for name in ("eval", "exec", "open"):
            patch.setattr(builtins, name, spy(name))
        patch.setattr(builtins, "compile", ast_only_compile)
        try:
            parse_condition(text).evaluate({"x": np.arange(3.0)})
            outcome = None
        except Exception as exc:  # noqa: BLE001 - classified below, after the builtins are back
            outcome = exc
    assert calls == []
    assert isinstance(outcome, cf.ValidationError), repr(outcome)
    assert "condition_on" in str(outcome)
    assert os.listdir(tmp_path) == []


def test_dangerous_strings_through_infer_effect(simulate, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = simulate("ab", 0).fit()
    for text in DANGEROUS:
        with pytest.raises(cf.ValidationError):
            model.infer_effect(condition_on=["x > 0", text])
    assert os.listdir(tmp_path) == []


# -- conditions inside infer_effect select the same rows ------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("seg == 'b'", lambda f: f.seg == "b"),
    ("x > 0 and seg in ['a', 'c']", lambda f: (f.x > 0) & f.seg.isin(["a", "c"])),
    ("not (x < -0.5 or seg != 'a')", lambda f: ~((f.x < -0.5) | (f.seg != "a"))),
    ("2 * x + 1 >= 0.5", lambda f: 2 * f.x + 1 >= 0.5),
])
def test_infer_effect_subgroup_sizes_match_pandas(simulate, text, expected):
    sim = simulate("multi_arm", 5)
    table = sim.df.copy()
    table.loc[table.index[::4], "y2"] = np.nan  # y2 uses its complete rows only
    frame = sim.fit(df=table).infer_effect(condition_on=[text]).to_frame()
    mask = expected(table)
    assert set(frame.condition) == {text}
    assert (frame.loc[frame.metric == "y1", "n"] == int(mask.sum())).all()
    assert (frame.loc[frame.metric == "y2", "n"] == int((mask & table.y2.notna()).sum())).all()


# -- random expressions: the parser agrees with a structural pandas evaluation ---------------
NUMERIC = ["a", "b", "k"]


@st.composite
def arithmetic(draw, depth=0):
    if depth >= 2 or draw(st.booleans()):
        if draw(st.booleans()):
            name = draw(st.sampled_from(NUMERIC))
            return name, lambda f, name=name: f[name].astype(float)
        value = draw(st.integers(-3, 3))
        return str(value) if value >= 0 else f"({value})", lambda f, value=value: float(value)
    op = draw(st.sampled_from(["+", "-", "*"]))
    left_text, left = draw(arithmetic(depth + 1))
    right_text, right = draw(arithmetic(depth + 1))
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    return f"({left_text} {op} {right_text})", lambda f: ops[op](left(f), right(f))


@st.composite
def boolean(draw, depth=0):
    kind = draw(st.sampled_from(["cmp", "in", "flag"] + (["and", "or", "not"] if depth < 3 else [])))
    if kind == "cmp":
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        left_text, left = draw(arithmetic())
        right_text, right = draw(arithmetic())
        ops = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
               "==": np.equal, "!=": np.not_equal}
        return f"{left_text} {op} {right_text}", lambda f: np.asarray(
            ops[op](np.broadcast_to(left(f), len(f)), np.broadcast_to(right(f), len(f))), bool)
    if kind == "in":
        labels = draw(st.lists(st.sampled_from(["web", "ios", "android", "it's"]), max_size=3))
        negate = draw(st.booleans())
        text = f"dev {'not in' if negate else 'in'} {labels!r}"
        return text, lambda f: f.dev.isin(labels).to_numpy() ^ negate
    if kind == "flag":
        return "flag", lambda f: f.flag.to_numpy()
    if kind == "not":
        text, fn = draw(boolean(depth + 1))
        return f"not ({text})", lambda f: ~fn(f)
    left_text, left = draw(boolean(depth + 1))
    right_text, right = draw(boolean(depth + 1))
    combine = np.logical_and if kind == "and" else np.logical_or
    return f"({left_text}) {kind} ({right_text})", lambda f: combine(left(f), right(f))


@settings(max_examples=60, deadline=None)
@given(case=boolean())
def test_random_expressions_match_structural_pandas_evaluation(frame, case):
    text, expected = case
    np.testing.assert_array_equal(mask_of(text, frame), expected(frame), err_msg=text)
