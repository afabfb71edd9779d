"""Golden sets: parsing (every error names its line and field), meets and score."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_operator.errors import SpecError
from deepseek_operator.rollout.golden import (
    DEFAULT_MAX_TOKENS,
    MAX_CASES,
    GoldenCase,
    GoldenSetError,
    meets,
    parse_golden_set,
    score,
)

SOURCE = "ConfigMap llm/r1-golden key golden.jsonl"
GOOD = '{"prompt": "Capital of France?", "expect": {"contains": "Paris"}}'


def test_api_md_example_parses() -> None:
    text = "\n".join(
        [
            '{"prompt": "What is 17 * 23? Answer with the number only.", "expect": {"contains": "391"},'
            ' "maxTokens": 32}',
            '{"prompt": "Capital of France?", "expect": {"regex": "(?i)paris"}}',
            '{"prompt": "Reply with OK.", "expect": {"equals": "OK"}}',
        ]
    )
    assert parse_golden_set(text, SOURCE) == (
        GoldenCase("What is 17 * 23? Answer with the number only.", "contains", "391", 32),
        GoldenCase("Capital of France?", "regex", "(?i)paris", DEFAULT_MAX_TOKENS),
        GoldenCase("Reply with OK.", "equals", "OK", DEFAULT_MAX_TOKENS),
    )


def test_blank_and_comment_lines_are_skipped_but_counted() -> None:
    text = f"# golden set v2\n\n   \n  # indented comment\r\n{GOOD}\r\n\n"
    assert parse_golden_set(text, SOURCE) == (GoldenCase("Capital of France?", "contains", "Paris"),)
    # The line number in an error counts the skipped lines too.
    with pytest.raises(GoldenSetError, match=r"line 3: prompt:"):
        parse_golden_set('# c\n\n{"prompt": "", "expect": {"contains": "x"}}', SOURCE)


def test_byte_order_mark_is_ignored() -> None:
    assert len(parse_golden_set("\ufeff" + GOOD, SOURCE)) == 1


def test_line_separator_inside_a_string_is_not_a_line_break() -> None:
    text = json.dumps({"prompt": "a\u2028b", "expect": {"equals": "x"}}, ensure_ascii=False)
    assert parse_golden_set(text, SOURCE)[0].prompt == "a\u2028b"


# (line text, field named in the message, words the message must contain)
ERRORS = [
    ("{not json", None, ["not valid JSON", "column", "one JSON object per line"]),
    ('["prompt"]', None, ["must be a JSON object", "an array"]),
    ('"just a string"', None, ["must be a JSON object", "a string"]),
    ('{"expect": {"contains": "x"}}', "prompt", ["non-empty string", "missing", 'e.g. "prompt"']),
    ('{"prompt": "", "expect": {"contains": "x"}}', "prompt", ["empty string"]),
    ('{"prompt": "  ", "expect": {"contains": "x"}}', "prompt", ["only whitespace"]),
    ('{"prompt": 7, "expect": {"contains": "x"}}', "prompt", ["a number"]),
    ('{"prompt": "p"}', "expect", ["needs exactly one of contains, regex, equals", "missing"]),
    ('{"prompt": "p", "expect": {}}', "expect", ["needs exactly one of contains, regex, equals", "got none"]),
    ('{"prompt": "p", "expect": "391"}', "expect", ["needs exactly one of", "a string"]),
    ('{"prompt": "p", "expect": {"contains": "1", "regex": "2"}}', "expect", ["got contains, regex"]),
    ('{"prompt": "p", "expect": {"startsWith": "1"}}', "expect", ["unknown key 'startsWith'"]),
    ('{"prompt": "p", "expect": {"contains": 391}}', "expect.contains", ["must be a string", "a number"]),
    ('{"prompt": "p", "expect": {"equals": null}}', "expect.equals", ["must be a string", "null"]),
    ('{"prompt": "p", "expect": {"contains": ""}}', "expect.contains", ["every output would pass"]),
    ('{"prompt": "p", "expect": {"regex": ""}}', "expect.regex", ["every output would pass"]),
    (
        '{"prompt": "p", "expect": {"regex": "(unclosed"}}',
        "expect.regex",
        ["does not compile", "fix the pattern"],
    ),
    ('{"prompt": "p", "expect": {"regex": "*x"}}', "expect.regex", ["does not compile"]),
    ('{"prompt": "p", "expect": {"regex": "a{99999999999}"}}', "expect.regex", ["does not compile"]),
    ("[" * 100_000 + "]" * 100_000, None, ["nested too deeply"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": 0}', "maxTokens", ["from 1 to 4096", "got 0"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": 4097}', "maxTokens", ["got 4097"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": 32.0}', "maxTokens", ["whole number", "32.0"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": "32"}', "maxTokens", ['got "32"']),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": true}', "maxTokens", ["got true"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "maxTokens": NaN}', "maxTokens", ["got NaN"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "max_tokens": 3}', "max_tokens", ["did you mean maxTokens"]),
    ('{"prompt": "p", "expect": {"equals": "x"}, "a": 1, "b": 2}', "a, b", ["unknown keys", "allowed keys"]),
    ('{"prompt": "p", "prompt": "q", "expect": {"equals": "x"}}', "prompt", ["more than once"]),
]


@pytest.mark.parametrize(("line", "field", "words"), ERRORS, ids=[e[0][:50] for e in ERRORS])
def test_errors_name_source_line_field_and_fix(line: str, field: str | None, words: list[str]) -> None:
    text = f"{GOOD}\n# second case is broken\n{line}\n{GOOD}"
    with pytest.raises(GoldenSetError) as caught:
        parse_golden_set(text, SOURCE)
    err = caught.value
    message = str(err)
    prefix = f"{SOURCE} line 3: " + (f"{field}: " if field else "")
    assert message.startswith(prefix), message
    for word in words:
        assert word in message, message
    # Every message ends with a fix after the problem.
    assert "; " in message.removeprefix(prefix)
    assert (err.source, err.line, err.field) == (SOURCE, 3, field)


def test_api_md_style_message_for_a_bad_expect() -> None:
    with pytest.raises(GoldenSetError) as caught:
        parse_golden_set(f'{GOOD}\n{GOOD}\n{{"prompt": "p", "expect": {{}}}}', SOURCE)
    assert str(caught.value) == (
        f"{SOURCE} line 3: expect: needs exactly one of contains, regex, equals (got none); "
        'e.g. {"contains": "391"}'
    )


def test_empty_set_is_an_error_without_a_line() -> None:
    for text in ["", "\n\n", "# only a comment\n"]:
        with pytest.raises(
            GoldenSetError, match=r"^ConfigMap llm/r1-golden key golden.jsonl: no cases"
        ) as caught:
            parse_golden_set(text, SOURCE)
        assert caught.value.line is None


def test_at_most_500_cases() -> None:
    assert len(parse_golden_set("\n".join([GOOD] * MAX_CASES), SOURCE)) == MAX_CASES
    with pytest.raises(GoldenSetError, match=r"line 502: too many cases \(at most 500\)"):
        parse_golden_set("# header\n" + "\n".join([GOOD] * (MAX_CASES + 1)), SOURCE)


def test_golden_set_error_is_a_spec_error_and_a_value_error() -> None:
    with pytest.raises(GoldenSetError) as caught:
        parse_golden_set("{", SOURCE)
    assert isinstance(caught.value, SpecError)
    assert isinstance(caught.value, ValueError)


def test_golden_case_validates_itself() -> None:
    with pytest.raises(ValueError, match="kind"):
        GoldenCase("p", "startswith", "x")
    with pytest.raises(ValueError, match="max_tokens"):
        GoldenCase("p", "contains", "x", 0)
    with pytest.raises(ValueError):
        GoldenCase("p", "regex", "(")


@pytest.mark.parametrize(
    ("kind", "value", "output", "expected"),
    [
        ("contains", "391", "The answer is 391.", True),
        ("contains", "391", "The answer is 39 1.", False),
        ("contains", "Paris", "paris", False),  # case matters for contains
        ("regex", "(?i)paris", "It is PARIS.", True),
        ("regex", r"^\s*391\s*$", " 391\n", True),
        ("regex", r"^391$", "x 391", False),
        ("regex", "39[0-9]", "the 395th", True),  # search, not match
        ("equals", "OK", "  OK\n", True),
        ("equals", " OK ", "OK", True),
        ("equals", "OK", "OK.", False),
        ("equals", "OK", "ok", False),
        ("equals", "", "   ", True),
    ],
)
def test_meets(kind: str, value: str, output: str, expected: bool) -> None:
    assert meets(GoldenCase("p", kind, value), output) is expected


def test_score_counts_failed_requests_as_not_met() -> None:
    cases = [GoldenCase("a", "contains", "1"), GoldenCase("b", "equals", "2"), GoldenCase("c", "regex", "3+")]
    assert score(cases, ["1", "2", "333"]) == 1.0
    assert score(cases, ["1", None, "x"]) == pytest.approx(1 / 3)
    assert score(cases, [None, None, None]) == 0.0


def test_score_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="2 cases but 1 outputs"):
        score([GoldenCase("a", "contains", "1")] * 2, ["1"])
    with pytest.raises(ValueError, match="no cases"):
        score([], [])


# -- properties --------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_case = st.builds(
    GoldenCase,
    prompt=_text.filter(lambda s: s.strip() != ""),
    kind=st.sampled_from(["contains", "equals"]),
    value=_text,
    max_tokens=st.integers(1, 4096),
)


@given(st.lists(_case, min_size=1, max_size=20), st.booleans())
def test_serialised_cases_parse_back_unchanged(cases: list[GoldenCase], ascii_only: bool) -> None:
    lines = []
    for case in cases:
        obj: dict[str, object] = {"prompt": case.prompt, "expect": {case.kind: case.value}}
        if case.max_tokens != DEFAULT_MAX_TOKENS:
            obj["maxTokens"] = case.max_tokens
        lines.append(json.dumps(obj, ensure_ascii=ascii_only))
    assert parse_golden_set("\n".join(lines), SOURCE) == tuple(cases)


@given(_text, _text, _text)
def test_contains_holds_for_any_surrounding_text(before: str, value: str, after: str) -> None:
    assert meets(GoldenCase("p", "contains", value), before + value + after)


@given(_text, st.text(" \t\n", max_size=3), st.text(" \t\n", max_size=3))
def test_equals_ignores_surrounding_whitespace(value: str, lead: str, trail: str) -> None:
    assert meets(GoldenCase("p", "equals", value), lead + value + trail)


@given(st.lists(st.tuples(_case, st.one_of(st.none(), _text)), min_size=1, max_size=30))
def test_score_is_the_fraction_met(pairs: list[tuple[GoldenCase, str | None]]) -> None:
    cases = [c for c, _ in pairs]
    outputs = [o for _, o in pairs]
    met = sum(1 for c, o in pairs if o is not None and meets(c, o))
    assert score(cases, outputs) == met / len(pairs)
    assert 0.0 <= score(cases, outputs) <= 1.0


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_golden_set_error(text: str) -> None:
    try:
        cases = parse_golden_set(text, SOURCE)
    except GoldenSetError as err:
        assert str(err).startswith(SOURCE)
    else:
        assert 1 <= len(cases) <= MAX_CASES
