"""Golden sets: the prompts a revision must answer well before it gets traffic.

A golden set is JSON Lines held in a ConfigMap key (API.md, "Golden set format"):

    {"prompt": "What is 17 * 23? Answer with the number only.", "expect": {"contains": "391"}}

:func:`parse_golden_set` turns the text into :class:`GoldenCase` values or raises
:class:`GoldenSetError` naming the source, the line, the field and the fix;
:func:`meets` and :func:`score` judge a revision's outputs. Everything here is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deepseek_operator.errors import SpecError

KINDS = ("contains", "regex", "equals")
DEFAULT_MAX_TOKENS = 64
MAX_TOKENS_LIMIT = 4096
MAX_CASES = 500
ALLOWED_KEYS = ("prompt", "expect", "maxTokens")

_EXAMPLE_LINE = '{"prompt": "Capital of France?", "expect": {"contains": "Paris"}}'
_EXPECT_EXAMPLE = '{"contains": "391"}'


@dataclass(frozen=True)
class GoldenCase:
    """One prompt and what its output must satisfy; construction raises ValueError for a bad kind,
    max_tokens or regex."""

    prompt: str
    kind: str  # one of KINDS
    value: str
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        # Cases built in code (tests, defaults) get the same guarantees as parsed ones,
        # so meets() never meets an unknown kind or a pattern that does not compile.
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise ValueError(f"max_tokens must be from 1 to {MAX_TOKENS_LIMIT}, not {self.max_tokens}")
        if self.kind == "regex":
            try:
                re.compile(self.value)
            except (re.error, OverflowError, RecursionError) as err:
                raise ValueError(f"regex {self.value!r} does not compile: {err}") from None


class GoldenSetError(SpecError, ValueError):
    """A golden set cannot be used; the message names the source, the line, the field and the fix.

    It is a :class:`SpecError` (a user's mistake: a condition on the resource, never a
    rollback) and a :class:`ValueError` (what a parser raises on bad text).
    """

    def __init__(self, source: str, line: int | None, field: str | None, problem: str, fix: str) -> None:
        where = source if line is None else f"{source} line {line}"
        what = problem if field is None else f"{field}: {problem}"
        super().__init__(f"{where}: {what}; {fix}")
        self.source = source
        self.line = line
        self.field = field


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; a golden case with two
    # "expect"s is a mistake the user should hear about, not a coin toss.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_expect(raw: Any, source: str, line: int) -> tuple[str, str]:
    detail: str | None = None
    if not isinstance(raw, dict):
        detail = f"got {_json_type(raw)}"
    elif unknown := sorted(k for k in raw if k not in KINDS):
        detail = f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}"
    elif len(raw) != 1:
        detail = f"got {', '.join(sorted(raw)) or 'none'}"
    if detail is not None:
        raise GoldenSetError(
            source,
            line,
            "expect",
            f"needs exactly one of {', '.join(KINDS)} ({detail})",
            f"e.g. {_EXPECT_EXAMPLE}",
        )
    ((kind, value),) = raw.items()
    field = f"expect.{kind}"
    if not isinstance(value, str):
        raise GoldenSetError(
            source, line, field, f"must be a string, got {_json_type(value)}", f'e.g. {{"{kind}": "391"}}'
        )
    if kind in ("contains", "regex") and value == "":
        # An empty substring or pattern matches every output: the case could never fail,
        # which would quietly inflate every revision's score.
        raise GoldenSetError(
            source,
            line,
            field,
            "is empty, so every output would pass",
            "give the text the answer must contain",
        )
    if kind == "regex":
        try:
            re.compile(value)
        # re raises OverflowError for a{99999999999} and RecursionError for deep nesting.
        except (re.error, OverflowError, RecursionError) as err:
            raise GoldenSetError(
                source,
                line,
                field,
                f"does not compile ({err})",
                "fix the pattern (Python re syntax; inside the JSON string a literal ( or . "
                "is written \\\\( or \\\\.)",
            ) from None
    return kind, value


def _parse_max_tokens(raw: Any, source: str, line: int) -> int:
    # bool is an int in Python and 32.0 is a float in JSON: neither is what the user meant.
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_TOKENS_LIMIT:
        raise GoldenSetError(
            source,
            line,
            "maxTokens",
            f"must be a whole number from 1 to {MAX_TOKENS_LIMIT}, got {json.dumps(raw)}",
            f'e.g. "maxTokens": 32, or leave it out for {DEFAULT_MAX_TOKENS}',
        )
    return raw


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_keys(obj: dict[str, Any], source: str, line: int) -> None:
    unknown = [k for k in obj if k not in ALLOWED_KEYS]
    if unknown:
        fix = f"the allowed keys are {', '.join(ALLOWED_KEYS)}"
        # Keys are case-sensitive; max_tokens / maxtokens is the mistake people make.
        if any(k.replace("_", "").lower() == "maxtokens" for k in unknown):
            fix += " (did you mean maxTokens?)"
        raise GoldenSetError(
            source, line, ", ".join(unknown), f"unknown key{'s' if len(unknown) > 1 else ''}", fix
        )


def _parse_prompt(obj: dict[str, Any], source: str, line: int) -> str:
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        if "prompt" not in obj:
            got = "it is missing"
        elif isinstance(prompt, str):
            got = "got only whitespace" if prompt else "got an empty string"
        else:
            got = f"got {_json_type(prompt)}"
        raise GoldenSetError(
            source,
            line,
            "prompt",
            f"must be a non-empty string ({got})",
            'e.g. "prompt": "Capital of France?"',
        )
    return prompt


def _parse_line(text: str, source: str, line: int) -> GoldenCase:
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKeyError as err:
        raise GoldenSetError(
            source, line, err.key, "appears more than once in the object", "keep one of them"
        ) from None
    except json.JSONDecodeError as err:
        raise GoldenSetError(
            source,
            line,
            None,
            f"not valid JSON ({err.msg} at column {err.colno})",
            f"write one JSON object per line, e.g. {_EXAMPLE_LINE}",
        ) from None
    except RecursionError:
        raise GoldenSetError(
            source,
            line,
            None,
            "JSON nested too deeply",
            f"write one flat object per line, e.g. {_EXAMPLE_LINE}",
        ) from None
    if not isinstance(obj, dict):
        raise GoldenSetError(
            source,
            line,
            None,
            f"each line must be a JSON object, got {_json_type(obj)}",
            f"e.g. {_EXAMPLE_LINE}",
        )
    _check_keys(obj, source, line)
    prompt = _parse_prompt(obj, source, line)
    if "expect" not in obj:
        raise GoldenSetError(
            source,
            line,
            "expect",
            f"needs exactly one of {', '.join(KINDS)} (it is missing)",
            f'e.g. "expect": {_EXPECT_EXAMPLE}',
        )
    kind, value = _parse_expect(obj["expect"], source, line)
    max_tokens = (
        _parse_max_tokens(obj["maxTokens"], source, line) if "maxTokens" in obj else DEFAULT_MAX_TOKENS
    )
    return GoldenCase(prompt=prompt, kind=kind, value=value, max_tokens=max_tokens)


def parse_golden_set(text: str, source: str) -> tuple[GoldenCase, ...]:
    """Parse a JSON Lines golden set into 1..500 cases, in file order.

    Blank lines and lines whose first non-blank character is ``#`` are skipped; line
    numbers in errors count every physical line from 1. ``source`` says where the text
    came from (e.g. ``ConfigMap llm/r1-golden key golden.jsonl``) and starts every
    message. Raises :class:`GoldenSetError` on the first problem found; never anything else.
    """
    # Editors on Windows write a byte-order mark; it is not part of the first object.
    text = text.removeprefix("\ufeff")
    cases: list[GoldenCase] = []
    # Split on newlines only: str.splitlines() would also split on U+2028 and friends,
    # which JSON allows raw inside strings.
    for number, raw_line in enumerate(text.split("\n"), start=1):
        stripped = raw_line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(cases) == MAX_CASES:
            raise GoldenSetError(
                source,
                number,
                None,
                f"too many cases (at most {MAX_CASES})",
                "split the set or keep the cases that tell revisions apart",
            )
        cases.append(_parse_line(stripped, source, number))
    if not cases:
        raise GoldenSetError(
            source,
            None,
            None,
            "no cases (only blank or # lines)",
            f"add at least one line like {_EXAMPLE_LINE}",
        )
    return tuple(cases)


def meets(case: GoldenCase, output: str) -> bool:
    """Whether ``output`` satisfies the case's expectation.

    ``contains``: the value is a substring of the output; ``regex``: ``re.search`` finds
    the pattern anywhere in the output; ``equals``: output and value are equal once
    leading and trailing whitespace is stripped from both.
    """
    if case.kind == "contains":
        return case.value in output
    if case.kind == "regex":
        return re.search(case.value, output) is not None
    return output.strip() == case.value.strip()


def score(cases: Sequence[GoldenCase], outputs: Sequence[str | None]) -> float:
    """The fraction (0.0..1.0) of cases whose output meets its expectation.

    ``outputs[i]`` answers ``cases[i]``; ``None`` means that request failed and counts as
    not met. Raises ValueError when the lengths differ or there are no cases.
    """
    if len(cases) != len(outputs):
        raise ValueError(f"{len(cases)} cases but {len(outputs)} outputs")
    if not cases:
        raise ValueError("no cases to score")
    passed = sum(1 for case, out in zip(cases, outputs, strict=True) if out is not None and meets(case, out))
    return passed / len(cases)
