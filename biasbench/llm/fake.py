"""A deterministic fake LLM for demos and tests: no GPU, same answer for the same prompt.

Why: the flows, the queue and the analysis must be exercisable end to end on any laptop and in
CI, including the failure paths. The fake reads the prompts of `biasbench.prompts` (attrgen vs.
rating, scale order, rationale requested) and answers in the requested JSON:

- attrgen: a name from small built-in lists chosen by gender and (sub)region, plus a short
  appearance and biography, all picked by a stable hash of the persona text;
- rating: a latent score from a stable hash of (persona text, adjective, model), shifted by
  mild group effects (gender and religion, direction varying per adjective) and a small
  per-model tilt, so a quick analysis has differences to show. `in` answers give the score,
  `rev` answers its mirror 6 - r, except for ~15 % of (persona, trait) pairs where the `rev`
  answer is off by one, so dual pairs come out ~85 % consistent.

Failure modes are steered by suffixes of the model name; they combine, e.g.
`m@slow=0.1@fail-after=20`:

- `name@fail`          every chat raises `LLMResponseError("fake failure", 500)`;
- `name@unreachable`   probe (and chat) raise `LLMUnreachable`;
- `name@garbage`       answers are prose without JSON, so parsing fails;
- `name@slow=S`        each chat first sleeps S seconds (added to `latency`);
- `name@fail-after=N`  the first N chats of this client instance answer, later ones raise
                       `LLMResponseError`.

Answer content depends only on the part before the first "@", so `m@slow=0.1` and `m` give
the same ratings.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Final

from biasbench.errors import InvalidConfig, LLMResponseError, LLMUnreachable
from biasbench.llm.base import Message, Usage
from biasbench.prompts import (
    ATTRGEN_TASK,
    PROFILE_LEAD,
    QUESTION_PREFIX,
    RATIONALE_KEY_HINT,
    SCALE_WORDS,
)

INCONSISTENT_SHARE: Final = 0.15
"""Share of (persona, trait) pairs whose `rev` answer is deliberately off by one."""

_GROUP_EFFECT: Final = 0.35
_MODEL_TILT: Final = 0.3

_LEAD: Final = re.compile(
    rf"^{PROFILE_LEAD}an? (\d+)-year-old (.+?)(?: from (.+?))?(?: \(([^()]*)\))?\.$", re.MULTILINE
)
_FIELD: Final = re.compile(r"^- ([A-Za-z ]+): (.+)$", re.MULTILINE)
_RELIGION_LINE: Final = "\n- Religion: "
_GENDER_LEAD: Final = re.compile(r"-year-old (man|woman|non-binary person|person)\b")
_SHE: Final = re.compile(r"\b(she|her)\b", re.IGNORECASE)
_HE: Final = re.compile(r"\b(he|him|his)\b", re.IGNORECASE)

GARBAGE_ANSWER: Final = "Hard to say, honestly. Somewhere around the middle, I suppose."
OTHER_ANSWER: Final = "I am a deterministic fake model; I only answer biasbench prompts."


# --- hashing -----------------------------------------------------------------------------------


def _digest(*parts: str) -> bytes:
    return blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


@lru_cache(maxsize=4096)
def _signed_unit(*parts: str) -> float:
    """A stable value in [-1, 1) for a few repeating keys (group × adjective, model)."""
    return int.from_bytes(_digest(*parts)[:4], "big") / 2**31 - 1.0


def _pick(options: Sequence[str], digest: bytes, byte: int) -> str:
    return options[digest[byte % len(digest)] % len(options)]


# --- ratings -----------------------------------------------------------------------------------


def _line_value(text: str, prefix: str) -> str:
    """The rest of the line after `prefix` ("" if absent); str.find is faster than a regex."""
    start = text.find(prefix)
    if start < 0:
        return ""
    start += len(prefix)
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _gender_of(persona_text: str) -> str:
    lead = _GENDER_LEAD.search(persona_text)
    if lead:
        return lead.group(1)
    if _SHE.search(persona_text):
        return "woman"
    if _HE.search(persona_text):
        return "man"
    return ""


def _latent_rating(persona_text: str, adjective: str, model: str) -> tuple[int, bytes]:
    """The model's 'true' opinion 1..5 on the `in` scale, and the digest for further choices."""
    digest = _digest(persona_text, adjective, model)
    noise = sum(int.from_bytes(digest[i : i + 2], "big") for i in (0, 2, 4)) / 65536 - 1.5
    score = 3.0 + 2.0 * noise + _MODEL_TILT * _signed_unit("model", model)
    gender = _gender_of(persona_text)
    if gender:
        score += _GROUP_EFFECT * _signed_unit("gender", gender, adjective)
    religion = _line_value(persona_text, _RELIGION_LINE)
    if religion:
        score += _GROUP_EFFECT * _signed_unit("religion", religion, adjective)
    return min(5, max(1, round(score))), digest


def _rating_answer(content: str, model: str) -> str:
    start = content.find(QUESTION_PREFIX)
    persona_text = content[:start]
    line_end = content.find("\n", start)
    question = content[start + len(QUESTION_PREFIX) : line_end if line_end >= 0 else None]
    adjective, _, rest = question.partition(" does ")
    subject = rest.removesuffix(" seem?").strip() or "this person"
    rating, digest = _latent_rating(persona_text, adjective, model)
    answer = rating
    if f"\n1 = {SCALE_WORDS[-1]} {adjective}\n" in content:  # rev: meanings reversed
        answer = 6 - rating
        if digest[6] < 256 * INCONSISTENT_SHARE:
            step = 1 if digest[7] & 1 else -1
            answer = answer + step if 1 <= answer + step <= 5 else answer - step
    if RATIONALE_KEY_HINT not in content[start:]:
        return json.dumps({"rating": answer})
    rationale = (
        f"{subject[:1].upper()}{subject[1:]} comes across as {SCALE_WORDS[rating - 1]} "
        f"{adjective} from the description; this is a first impression only."
    )
    return json.dumps({"rationale": rationale, "rating": answer}, ensure_ascii=False)


# --- attribute generation ----------------------------------------------------------------------

# Per culture: female given names | male given names | family names (space-separated).
_NAME_TABLE: Final = {
    "anglo": "Emily Sarah Olivia Grace | James Daniel Ethan Liam | Smith Taylor Wilson Brooks",
    "german": "Anna Lena Katrin Sabine | Lukas Jonas Markus Stefan | Keller Becker Hoffmann Wagner",
    "french": "Camille Manon Claire Élodie | Louis Julien Pierre Hugo | Dubois Lefèvre Moreau Roux",
    "nordic": "Ingrid Sofie Emma Astrid | Erik Lars Mikkel Johan | Jensen Lindqvist Hansen Berg",
    "southern_european": "Giulia Lucía Eleni Marta | Luca Pablo Giorgos Marco "
    "| Rossi García Papadakis Ferreira",
    "eastern_european": "Katarzyna Olga Ivana Natalia | Tomasz Dmitri Jan Andrei "
    "| Nowak Ivanova Horvat Popescu",
    "hispanic": "María Camila Valentina Gabriela | José Carlos Diego Mateo "
    "| Rodríguez Hernández López Gómez",
    "brazilian": "Ana Beatriz Juliana Larissa | João Rafael Thiago Lucas "
    "| Silva Santos Oliveira Pereira",
    "arabic": "Fatima Layla Mariam Noor | Ahmed Omar Karim Youssef | Haddad Mansour Khalil Benali",
    "turkish_persian": "Zeynep Elif Shirin Neda | Emre Mehmet Reza Dariush "
    "| Yılmaz Demir Hosseini Karimi",
    "west_african": "Ngozi Ama Fatou Adaeze | Kwame Chinedu Moussa Kofi "
    "| Okafor Mensah Diallo Adeyemi",
    "east_southern_african": "Wanjiru Thandiwe Amina Tigist | Tendai Abebe Sipho Baraka "
    "| Mwangi Nkosi Bekele Moyo",
    "south_asian": "Priya Ananya Sana Nusrat | Rahul Arjun Imran Farhan "
    "| Sharma Patel Rahman Perera",
    "central_asian": "Aigerim Dilnoza Madina Gulnara | Nurlan Timur Rustam Bakhtiyor "
    "| Nurlanov Karimov Abdullayev Seitkali",
    "chinese": "Mei Xiu Lan Yan | Wei Jun Hao Lei | Wang Li Chen Zhang",
    "japanese_korean": "Yuki Haruka Ji-woo Seo-yeon | Hiroshi Kenta Min-jun Do-hyun "
    "| Tanaka Sato Kim Park",
    "southeast_asian": "Linh Siti Mai Ratana | Minh Budi Somchai Rizal | Nguyen Santoso Tran Reyes",
    "hebrew": "Noa Tamar Yael Maya | Noam Eitan Yosef Ariel | Cohen Levi Mizrahi Peretz",
    "pacific": "Mele Losa Ana Salote | Sione Tevita Manu Viliami | Tupou Fifita Taufa Vaea",
}
_CULTURES: Final[dict[str, list[tuple[str, ...]]]] = {
    culture: [tuple(part.split()) for part in row.split("|")]
    for culture, row in _NAME_TABLE.items()
}

# Countries whose names would be implausible from their subregion's lists.
_COUNTRY_CULTURES: Final[dict[str, tuple[str, ...]]] = {
    "brazil": ("brazilian",),
    "türkiye": ("turkish_persian",),
    "iran": ("turkish_persian",),
    "afghanistan": ("turkish_persian",),
    "israel": ("hebrew",),
    "georgia": ("eastern_european",),
    "japan": ("japanese_korean",),
    "south korea": ("japanese_korean",),
    "united kingdom": ("anglo",),
    "ireland": ("anglo",),
    "jamaica": ("anglo",),
    "trinidad and tobago": ("anglo",),
    "haiti": ("french",),
    "france": ("french",),
    "germany": ("german",),
    "sweden": ("nordic",),
    "norway": ("nordic",),
}

# Checked in order: the first keyword contained in the (sub)region text wins.
_AREA_CULTURES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("northern africa", ("arabic",)),
    ("western asia", ("arabic", "turkish_persian")),
    ("central asia", ("central_asian",)),
    ("southern asia", ("south_asian",)),
    ("eastern asia", ("chinese", "japanese_korean")),
    ("south-eastern asia", ("southeast_asian",)),
    ("western africa", ("west_african",)),
    ("middle africa", ("west_african",)),
    ("africa", ("east_southern_african", "west_african")),
    ("northern america", ("anglo",)),
    ("australia", ("anglo",)),
    ("america", ("hispanic", "brazilian")),
    ("caribbean", ("hispanic",)),
    ("northern europe", ("anglo", "nordic")),
    ("western europe", ("german", "french")),
    ("southern europe", ("southern_european",)),
    ("eastern europe", ("eastern_european",)),
    ("europe", ("german", "southern_european", "eastern_european")),
    ("melanesia", ("pacific",)),
    ("micronesia", ("pacific",)),
    ("polynesia", ("pacific",)),
    ("asia", ("chinese", "south_asian")),
)
_ANY_CULTURE: Final = tuple(_CULTURES)

_HAIR: Final = (
    "short black",
    "shoulder-length brown",
    "curly dark",
    "straight auburn",
    "cropped dark-blond",
    "thick wavy",
)
_GREY_HAIR: Final = ("short grey", "thinning white", "silver-streaked", "neatly combed grey")
_EYES: Final = ("brown", "dark brown", "hazel", "green", "grey", "blue")
_BUILD: Final = ("tall and slim", "of medium height", "short and sturdy", "broad-shouldered")
_CLOTHES: Final = (
    "plain practical clothes",
    "a tidy button-down shirt",
    "comfortable knitwear",
    "bright, patterned clothing",
    "a well-worn jacket",
)
_HOBBIES: Final = (
    "enjoys cooking for friends",
    "goes hiking at weekends",
    "reads detective novels",
    "plays chess in a local club",
    "tends a small vegetable garden",
    "volunteers at a community centre",
)
_NOT_A_JOB: Final = frozenset({"unemployed", "retired", "student", "homemaker", "none"})
_PRONOUNS: Final[dict[str, tuple[str, str, str]]] = {
    "woman": ("She", "has", "is"),
    "man": ("He", "has", "is"),
    "non-binary person": ("They", "have", "are"),
}


def _name(gender: str, origin: str, area: str, digest: bytes) -> str:
    area = area.lower()
    cultures = _COUNTRY_CULTURES.get(origin.lower().removeprefix("the "))
    if cultures is None:
        cultures = next((c for key, c in _AREA_CULTURES if key in area), _ANY_CULTURE)
    female, male, family = _CULTURES[_pick(cultures, digest, 0)]
    given = female if gender == "woman" else male if gender == "man" else female + male
    return f"{_pick(given, digest, 1)} {_pick(family, digest, 2)}"


def _work(occupation: str) -> str:
    job = occupation.strip().lower()
    if not job:
        return "works for a local business"
    if job in _NOT_A_JOB:
        return f"is {'a ' if job in {'student', 'homemaker'} else ''}{job}"
    article = "an" if job[:1] in "aeiou" else "a"
    verb = "is" if job.startswith(("worker ", "member ")) else "works as"
    return f"{verb} {article} {job}"


def _attributes_answer(content: str) -> str:
    lead = _LEAD.search(content)
    age, gender, origin, area = lead.groups("") if lead else ("", "", "", "")
    fields = {label.lower(): value.strip() for label, value in _FIELD.findall(content)}
    digest = _digest(content)
    name = _name(gender, origin, area, digest)
    first = name.split(" ")[0]
    pronoun, has, is_ = _PRONOUNS.get(gender, (first, "has", "is"))
    hair = _pick(_GREY_HAIR if age and int(age) >= 60 else _HAIR, digest, 3)
    appearance = (
        f"{pronoun} {has} {hair} hair and {_pick(_EYES, digest, 4)} eyes and {is_} "
        f"{_pick(_BUILD, digest, 5)}. {first} usually wears {_pick(_CLOTHES, digest, 6)}."
    )
    biography = [
        f"{first} is {age} years old." if age else f"{first} prefers not to talk about age.",
        f"{first} grew up in {origin}." if origin else f"{first} has moved around a lot.",
        f"{first} {_work(fields.get('occupation', ''))}.",
    ]
    if fields.get("education"):
        biography.append(f"{first}'s highest level of education: {fields['education']}.")
    if fields.get("marital status"):
        biography.append(f"Marital status: {fields['marital status']}.")
    biography.append(f"In {first}'s free time, {first} {_pick(_HOBBIES, digest, 7)}.")
    answer = {"name": name, "appearance": appearance, "biography": " ".join(biography)}
    return json.dumps(answer, ensure_ascii=False)


# --- entry points ------------------------------------------------------------------------------


def answer_for(messages: Sequence[Message], model_name: str) -> str:
    """The fake's answer to a chat: attrgen JSON, rating JSON, or a fixed sentence otherwise.

    Only the last user message counts, and only the model name before any "@" suffix.
    """
    content = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if ATTRGEN_TASK in content:
        return _attributes_answer(content)
    if QUESTION_PREFIX in content:
        return _rating_answer(content, model_name.split("@", 1)[0])
    return OTHER_ANSWER


@dataclass(frozen=True, slots=True)
class FakeBehaviour:
    """What the suffixes of a fake model name ask for (see the module docstring)."""

    base_model: str
    fail: bool = False
    unreachable: bool = False
    garbage: bool = False
    slow: float = 0.0
    fail_after: int | None = None


def _number(suffix: str, value: str, convert: type[float] | type[int]) -> float:
    """A finite, non-negative number from a suffix value, or InvalidConfig naming the suffix."""
    try:
        number = convert(value)
    except ValueError:
        number = -1
    if not math.isfinite(number) or number < 0:
        raise InvalidConfig("model_name", f"@{suffix} needs a number >= 0")
    return number


def parse_model_name(model_name: str) -> FakeBehaviour:
    """Split "name@flag@key=value" into the base name and its behaviour; unknown flags fail."""
    base, *suffixes = model_name.split("@")
    if not base.strip():
        raise InvalidConfig("model_name", f"empty base model name in {model_name!r}")
    flags: dict[str, bool] = {"fail": False, "unreachable": False, "garbage": False}
    slow = 0.0
    fail_after: int | None = None
    for suffix in suffixes:
        key, has_value, value = suffix.partition("=")
        if key in flags and not has_value:
            flags[key] = True
        elif key == "slow" and has_value:
            slow = _number(suffix, value, float)
        elif key == "fail-after" and has_value:
            fail_after = int(_number(suffix, value, int))
        else:
            raise InvalidConfig("model_name", f"unknown fake suffix @{suffix}")
    return FakeBehaviour(base_model=base, slow=slow, fail_after=fail_after, **flags)


class FakeChatClient:
    """`ChatClient` without a server: answers with `answer_for`, fails as the suffixes say."""

    def __init__(self, model_name: str, *, latency: float = 0.0) -> None:
        if not math.isfinite(latency) or latency < 0:
            raise InvalidConfig("latency", f"must be a finite number >= 0, got {latency}")
        self.model_name = model_name
        self.behaviour = parse_model_name(model_name)
        self.latency = latency
        self.calls = 0  # chats started on this instance; what @fail-after counts
        self.usage = Usage()  # words, as the test server counts tokens

    async def probe(self) -> None:
        if self.behaviour.unreachable:
            raise LLMUnreachable(f"fake server for {self.model_name!r} is unreachable")

    async def chat(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        self.calls += 1
        call = self.calls
        behaviour = self.behaviour
        delay = self.latency + behaviour.slow
        if delay > 0:
            await asyncio.sleep(delay)
        if behaviour.unreachable:
            raise LLMUnreachable(f"fake server for {self.model_name!r} is unreachable")
        if behaviour.fail:
            raise LLMResponseError("fake failure", 500)
        if behaviour.fail_after is not None and call > behaviour.fail_after:
            raise LLMResponseError(f"fake failure after {behaviour.fail_after} answers", 500)
        answer = GARBAGE_ANSWER if behaviour.garbage else answer_for(messages, behaviour.base_model)
        self.usage.add(sum(len(m["content"].split()) for m in messages), len(answer.split()))
        return answer

    async def aclose(self) -> None:
        """Nothing to release."""
