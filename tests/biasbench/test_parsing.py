"""Reading answers: the JSON object inside whatever the model wrapped around it."""

from __future__ import annotations

import pytest

from biasbench.errors import ParseError
from biasbench.parsing import (
    RatingAnswer,
    extract_json_object,
    parse_attributes,
    parse_rating,
    snippet,
)


@pytest.mark.parametrize(
    "text",
    [
        '{"rating": 4}',
        '  \n{"rating": 4}\n',
        '```json\n{"rating": 4}\n```',
        '```\n{"rating": 4}\n```',
        'Sure! Here is my answer:\n```json\n{"rating": 4}\n```\nHope this helps.',
        'My rating, as requested: {"rating": 4}. Thanks.',
        '<think>The person seems {fine}, maybe {"rating": 2}?</think>\n{"rating": 4}',
        '<THINK>\nhmm\n</THINK>{"rating": 4}',
        'Reasoning without an opening tag... {"rating": 1}\n</think>\n\n{"rating": 4}',
        '{"rating": 4} {"rating": 2}',
        'Format {rating: n} noted. {"rating": 4}',
    ],
)
def test_extract_finds_the_answer(text: str) -> None:
    assert extract_json_object(text) == {"rating": 4}


def test_braces_and_quotes_inside_strings() -> None:
    text = '{"rationale": "uses {braces} and \\"quotes\\" and a \\\\", "rating": 3} trailing }'
    assert extract_json_object(text) == {
        "rationale": 'uses {braces} and "quotes" and a \\',
        "rating": 3,
    }


def test_nested_object_is_kept_whole() -> None:
    assert extract_json_object('x {"a": {"b": 1}, "rating": 5} y') == {"a": {"b": 1}, "rating": 5}


def test_broken_outer_candidate_falls_back_to_next() -> None:
    assert extract_json_object('{oops {"rating": 2}') == {"rating": 2}


def test_raw_newline_inside_string_is_tolerated() -> None:
    assert extract_json_object('{"rationale": "line one\nline two", "rating": 2}')["rating"] == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("I think it is a four.", "no JSON object"),
        ('{"rating": 4', "no valid JSON object"),
        ("[1, 2, 3]", "no JSON object"),
        ('<think>still thinking {"rating": 4}', "not closed"),
    ],
)
def test_extract_failures(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        extract_json_object(text)


def test_parse_attributes() -> None:
    text = (
        "```json\n"
        '{"Name": " Amina Diallo ", "appearance": "Tall.", "BIOGRAPHY": "Born in Dakar.",'
        ' "age": 30}\n```'
    )
    assert parse_attributes(text) == {
        "name": "Amina Diallo",
        "appearance": "Tall.",
        "biography": "Born in Dakar.",
    }


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "A", "appearance": "B"}',
        '{"name": "", "appearance": "B", "biography": "C"}',
        '{"name": 7, "appearance": "B", "biography": "C"}',
    ],
)
def test_parse_attributes_rejects_incomplete(text: str) -> None:
    with pytest.raises(ParseError):
        parse_attributes(text)


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ('{"rating": 1}', 1),
        ('{"rating": 5}', 5),
        ('{"rating": "4"}', 4),
        ('{"rating": " 2 "}', 2),
        ('{"rating": 4.0}', 4),
        ('{"Rating": 3}', 3),
        ("4", 4),
        (" 3.\n", 3),
        ("<think>hmm</think>\n5", 5),
    ],
)
def test_parse_rating_accepts(text: str, rating: int) -> None:
    assert parse_rating(text, include_rationale=False) == RatingAnswer(rating, None)


@pytest.mark.parametrize(
    "text",
    [
        '{"rating": 0}',
        '{"rating": 6}',
        '{"rating": 3.5}',
        '{"rating": "3.5"}',
        '{"rating": "four"}',
        '{"rating": true}',
        '{"rating": null}',
        '{"rating": [4]}',
        '{"score": 4}',
        "I'd say 4",
        "6",
        "0",
    ],
)
def test_parse_rating_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_rating(text, include_rationale=False)


def test_parse_rating_with_rationale() -> None:
    text = '{"rationale": " Seems capable. ", "rating": 4}'
    assert parse_rating(text, include_rationale=True) == RatingAnswer(4, "Seems capable.")


def test_missing_rationale_is_tolerated() -> None:
    assert parse_rating('{"rating": 2}', include_rationale=True) == RatingAnswer(2, None)
    assert parse_rating('{"rationale": "", "rating": 2}', include_rationale=True).rationale is None


def test_unrequested_rationale_is_dropped() -> None:
    text = '{"rationale": "Seems capable.", "rating": 4}'
    assert parse_rating(text, include_rationale=False) == RatingAnswer(4, None)


def test_snippet() -> None:
    assert snippet("a\n  b\tc") == "a b c"
    assert snippet("x" * 300) == "x" * 199 + "…"
    assert len(snippet("word " * 100, limit=20)) <= 20
    assert snippet("short", limit=5) == "short"
