"""Reading LLM answers: find the JSON object in whatever the model wrapped around it.

Why lenient: models add reasoning blocks, code fences and polite prose even when told not to.
A rating that is present and valid should count; only answers with no readable object, or a
value outside the scale, become failures (`ParseError`, recorded, never fatal).

Fallback decided here: a rating answer that is *nothing but* one digit 1..5 (optionally with
a trailing period, after reasoning blocks are removed) is accepted as that rating, because it
is unambiguous. Digits inside prose ("I'd say 4") are not, because they are not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from biasbench.errors import ParseError
from biasbench.prompts import ATTRIBUTE_KEYS

_MAX_CANDIDATES: Final = 64
_REASONING_TAGS: Final = "think|thinking|reasoning"
_CLOSED_BLOCK: Final = re.compile(
    rf"<({_REASONING_TAGS})\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_OPEN_TAG: Final = re.compile(rf"<({_REASONING_TAGS})\b[^>]*>", re.IGNORECASE)
_CLOSE_TAG: Final = re.compile(rf"</({_REASONING_TAGS})\s*>", re.IGNORECASE)
_FENCE: Final = re.compile(r"```[A-Za-z0-9_-]*")
_BARE_RATING: Final = re.compile(r"[1-5]\.?")
_DECODER: Final = json.JSONDecoder(strict=False)  # tolerate raw newlines inside strings


@dataclass(frozen=True, slots=True)
class RatingAnswer:
    """A valid rating 1..5 on the scale as asked (raw, not yet mapped back for `rev`)."""

    rating: int
    rationale: str | None


def strip_reasoning(text: str) -> str:
    """Remove reasoning blocks; raise ParseError when one was opened and never closed.

    Handles `<think>...</think>` pairs anywhere, and a closing tag without an opening one
    (templates that put the opening `<think>` into the prompt): everything before it goes.
    """
    text = _CLOSED_BLOCK.sub(" ", text)
    close = _CLOSE_TAG.search(text)
    if close is not None:
        text = text[close.end() :]
        text = _CLOSED_BLOCK.sub(" ", text)
    if _OPEN_TAG.search(text):
        raise ParseError("reasoning block not closed (answer truncated?)")
    return text


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the brace that closes `text[start]`, honouring strings and escapes."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def extract_json_object(text: str) -> dict[str, Any]:
    """The first balanced `{...}` in the answer that parses as a JSON object.

    Reasoning blocks and code-fence markers are removed first; leading prose is skipped by the
    scan. If a candidate fails to parse, the scan goes on from the next `{` after its start, so
    a valid object nested in broken text is still found.
    """
    if not text or not text.strip():
        raise ParseError("empty answer")
    cleaned = _FENCE.sub(" ", strip_reasoning(text))
    start = cleaned.find("{")
    if start < 0:
        raise ParseError("no JSON object found")
    last_error = "unbalanced braces"
    for _ in range(_MAX_CANDIDATES):
        end = _balanced_end(cleaned, start)
        if end is not None:
            try:
                value = _DECODER.decode(cleaned[start:end])
            except json.JSONDecodeError as exc:
                last_error = f"invalid JSON ({exc.msg})"
            else:
                if isinstance(value, dict):
                    return value
        start = cleaned.find("{", start + 1)
        if start < 0:
            break
    raise ParseError(f"no valid JSON object: {last_error}")


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Keys stripped and lower-cased; the first spelling wins on collisions."""
    result: dict[str, Any] = {}
    for key, value in obj.items():
        result.setdefault(str(key).strip().lower(), value)
    return result


def parse_attributes(text: str) -> dict[str, str]:
    """{name, appearance, biography} as non-empty strings; other keys are ignored."""
    obj = _lower_keys(extract_json_object(text))
    attributes: dict[str, str] = {}
    for key in ATTRIBUTE_KEYS:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ParseError(f"{key!r} missing or not a non-empty string")
        attributes[key] = value.strip()
    return attributes


def _rating_value(value: Any) -> int:
    """An integer 1..5 from an int, an integral float, or a string holding one."""
    if isinstance(value, bool):
        raise ParseError("rating is a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value else int(value.strip())
        except ValueError:
            raise ParseError(f"rating is not a number: {snippet(value, 20)!r}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ParseError(f"rating is not an integer: {value}")
        value = int(value)
    if not isinstance(value, int):
        raise ParseError(f"rating has type {type(value).__name__}")
    if not 1 <= value <= 5:
        raise ParseError(f"rating out of range 1..5: {value}")
    return value


def _bare_rating(text: str) -> int | None:
    """The documented fallback: an answer that is only a digit 1..5 (maybe with a period)."""
    try:
        bare = strip_reasoning(text).strip()
    except ParseError:
        return None
    return int(bare[0]) if _BARE_RATING.fullmatch(bare) else None


def parse_rating(text: str, *, include_rationale: bool) -> RatingAnswer:
    """The rating (1..5) and, when asked for, the rationale (None if the model left it out).

    Without `include_rationale` a rationale the model volunteers is dropped, so what is stored
    does not depend on the model's chattiness.
    """
    try:
        obj = _lower_keys(extract_json_object(text))
    except ParseError:
        bare = _bare_rating(text)
        if bare is None:
            raise
        return RatingAnswer(rating=bare, rationale=None)
    if "rating" not in obj:
        raise ParseError("'rating' missing")
    rating = _rating_value(obj["rating"])
    rationale = None
    if include_rationale:
        raw = obj.get("rationale")
        if isinstance(raw, str) and raw.strip():
            rationale = raw.strip()
    return RatingAnswer(rating=rating, rationale=rationale)


def snippet(text: str, limit: int = 200) -> str:
    """The answer on one line, cut to `limit` characters with "…", for failure records."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    return line[: limit - 1].rstrip() + "…"
