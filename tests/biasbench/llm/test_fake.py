"""The fake backend: deterministic, parseable, varied, and failing on request."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import pytest

from biasbench.analysis import quick_analysis
from biasbench.errors import InvalidConfig, LLMResponseError, LLMUnreachable, ParseError
from biasbench.llm.base import ChatClient, Message
from biasbench.llm.fake import FakeChatClient, answer_for, parse_model_name
from biasbench.parsing import parse_attributes, parse_rating
from biasbench.plan import benchmark_plan
from biasbench.prompts import PersonaProfile, TraitView, attrgen_messages, benchmark_messages

GENDERS = ["male", "female", "diverse"]
PLACES = [
    ("Germany", "Europe", "Western Europe"),
    ("Nigeria", "Africa", "Western Africa"),
    ("Japan", "Asia", "Eastern Asia"),
    ("Brazil", "Americas", "South America"),
    ("Egypt", "Africa", "Northern Africa"),
    ("Samoa", "Oceania", "Polynesia"),
]
RELIGIONS = ["Christians", "Muslims", "Religiously_unaffiliated", "Hindus"]
TRAITS = [TraitView(i, a) for i, a in enumerate(["friendly", "competent", "lazy", "honest"], 1)]


def persona(index: int) -> PersonaProfile:
    origin, region, subregion = PLACES[index % len(PLACES)]
    return PersonaProfile(
        age=18 + (index * 7) % 70,
        gender=GENDERS[index % 3],
        origin=origin,
        region=region,
        subregion=subregion,
        education="upper_secondary_education",
        occupation=["technician", "student", "elementary_worker"][index % 3],
        marriage_status="single",
        migration_status="native",
        religion=RELIGIONS[index % len(RELIGIONS)],
        sexuality="heterosexual",
    )


PERSONAS = {index: persona(index) for index in range(60)}


def rating_messages(
    profile: PersonaProfile, trait: TraitView, order: str = "in", rationale: bool = False
) -> list[Message]:
    return benchmark_messages(
        profile,
        trait,
        scale_order=order,  # type: ignore[arg-type]
        include_rationale=rationale,
        system_prompt=None,
        attempt=1,
    )


def test_attrgen_answer_parses_and_is_deterministic() -> None:
    for profile in PERSONAS.values():
        messages = attrgen_messages(profile, system_prompt="Be kind.", attempt=1)
        answer = answer_for(messages, "m")
        assert answer == answer_for(messages, "m")
        attributes = parse_attributes(answer)
        assert len(attributes["name"].split()) == 2
        assert str(profile.age) in attributes["biography"]
        assert profile.origin in attributes["biography"]


def test_attrgen_names_fit_gender_and_vary() -> None:
    names = set()
    for profile in PERSONAS.values():
        answer = parse_attributes(
            answer_for(attrgen_messages(profile, system_prompt=None, attempt=1), "m")
        )
        names.add(answer["name"])
        pronoun = answer["appearance"].split()[0]
        assert pronoun == {"male": "He", "female": "She", "diverse": "They"}[profile.gender]
    assert len(names) > 20


@pytest.mark.parametrize("order", ["in", "rev"])
@pytest.mark.parametrize("rationale", [False, True])
def test_rating_answers_parse_in_both_orders(order: str, rationale: bool) -> None:
    for profile in list(PERSONAS.values())[:10]:
        for trait in TRAITS:
            messages = rating_messages(profile, trait, order, rationale)
            answer = answer_for(messages, "m")
            assert answer == answer_for(messages, "m")
            parsed = parse_rating(answer, include_rationale=rationale)
            assert 1 <= parsed.rating <= 5
            assert (parsed.rationale is not None) is rationale
            if rationale:
                assert trait.adjective in (parsed.rationale or "")


def test_ratings_with_named_personas() -> None:
    profile = PERSONAS[1]
    attributes = parse_attributes(
        answer_for(attrgen_messages(profile, system_prompt=None, attempt=1), "m")
    )
    named = dataclasses.replace(profile, attributes=attributes)
    parsed = parse_rating(
        answer_for(rating_messages(named, TRAITS[0], "in", True), "m"), include_rationale=True
    )
    assert attributes["name"] in (parsed.rationale or "")


def test_ratings_vary_across_personas_traits_and_models() -> None:
    def rating(index: int, trait: TraitView, model: str = "m") -> int:
        answer = answer_for(rating_messages(PERSONAS[index], trait), model)
        return parse_rating(answer, include_rationale=False).rating

    by_persona = {rating(index, TRAITS[0]) for index in PERSONAS}
    by_trait = {rating(0, trait) for trait in TRAITS} | {rating(1, trait) for trait in TRAITS}
    assert len(by_persona) >= 4
    assert len(by_trait) >= 2
    grid = [(index, trait) for index in range(20) for trait in TRAITS]
    assert [rating(i, t, "m") for i, t in grid] != [rating(i, t, "other") for i, t in grid]


def test_orders_mostly_consistent_and_analysis_has_content() -> None:
    """A full dual run through plan, prompts, fake and parser: ~85% of pairs consistent."""
    items = benchmark_plan(
        run_seed=7,
        persona_ids=list(PERSONAS),
        trait_ids=[t.id for t in TRAITS],
        scale_mode="in",
        dual_fraction=1.0,
    )
    traits = {t.id: t for t in TRAITS}
    rows = []
    for item in items:
        messages = rating_messages(
            PERSONAS[item.persona_id], traits[item.trait_id], item.scale_order
        )
        rating = parse_rating(answer_for(messages, "m"), include_rationale=False).rating
        rows.append((item.persona_id, item.trait_id, item.scale_order, rating))
    result = quick_analysis(rows, planned=len(items))
    assert result.dual_pairs == len(PERSONAS) * len(TRAITS)
    assert result.rma is not None and 0.75 <= result.rma <= 0.95
    assert result.mae is not None and 0 < result.mae < 0.5
    assert result.share_extreme is not None and 0 < result.share_extreme < 0.5
    assert result.share_middle is not None and 0.1 < result.share_middle < 0.7


def test_other_prompts_get_a_plain_answer() -> None:
    assert "fake" in answer_for([{"role": "user", "content": "Hello?"}], "m")
    assert answer_for([], "m")


def test_fast_enough_for_large_runs() -> None:
    messages = rating_messages(PERSONAS[3], TRAITS[1], "rev", True)
    start = time.perf_counter()
    for _ in range(2000):
        answer_for(messages, "m")
    assert (time.perf_counter() - start) / 2000 < 0.001  # ~30 µs typical; generous for CI


# --- the client and its suffixes ---------------------------------------------------------------

MESSAGES = rating_messages(PERSONAS[0], TRAITS[0])


async def chat(client: FakeChatClient) -> str:
    return await client.chat(MESSAGES, max_tokens=64)


def test_client_is_a_chat_client() -> None:
    client: ChatClient = FakeChatClient("m")
    assert client.model_name == "m"

    async def run() -> str:
        await client.probe()
        answer = await client.chat(MESSAGES, max_tokens=64)
        await client.aclose()
        return answer

    assert asyncio.run(run()) == answer_for(MESSAGES, "m")


def test_suffixes_do_not_change_answers() -> None:
    assert answer_for(MESSAGES, "m@slow=0.1") == answer_for(MESSAGES, "m")
    plain = asyncio.run(chat(FakeChatClient("m")))
    assert asyncio.run(chat(FakeChatClient("m@slow=0.01"))) == plain
    assert asyncio.run(chat(FakeChatClient("m@fail-after=3@slow=0"))) == plain


def test_fail_suffix() -> None:
    client = FakeChatClient("m@fail")
    asyncio.run(client.probe())  # reachable, but every answer fails
    with pytest.raises(LLMResponseError) as info:
        asyncio.run(chat(client))
    assert info.value.status_code == 500
    assert str(info.value) == "fake failure"


def test_unreachable_suffix() -> None:
    client = FakeChatClient("m@unreachable")
    with pytest.raises(LLMUnreachable):
        asyncio.run(client.probe())
    with pytest.raises(LLMUnreachable):
        asyncio.run(chat(client))


def test_garbage_suffix_fails_parsing() -> None:
    answer = asyncio.run(chat(FakeChatClient("m@garbage")))
    with pytest.raises(ParseError):
        parse_rating(answer, include_rationale=False)
    attrgen = attrgen_messages(PERSONAS[0], system_prompt=None, attempt=1)
    garbage = asyncio.run(FakeChatClient("m@garbage").chat(attrgen, max_tokens=64))
    with pytest.raises(ParseError):
        parse_attributes(garbage)


def test_slow_suffix_sleeps_and_adds_to_latency() -> None:
    start = time.perf_counter()
    asyncio.run(chat(FakeChatClient("m@slow=0.05", latency=0.05)))
    assert time.perf_counter() - start >= 0.09


def test_fail_after_counts_per_instance() -> None:
    async def run(client: FakeChatClient, n: int) -> list[str]:
        outcomes = []
        for _ in range(n):
            try:
                await chat(client)
                outcomes.append("ok")
            except LLMResponseError:
                outcomes.append("fail")
        return outcomes

    assert asyncio.run(run(FakeChatClient("m@fail-after=2"), 4)) == ["ok", "ok", "fail", "fail"]
    assert asyncio.run(run(FakeChatClient("m@fail-after=2"), 2)) == ["ok", "ok"]
    assert asyncio.run(run(FakeChatClient("m@fail-after=0"), 1)) == ["fail"]


def test_suffixes_combine() -> None:
    behaviour = parse_model_name("m@slow=0.1@fail-after=20@garbage")
    assert (behaviour.base_model, behaviour.slow, behaviour.fail_after) == ("m", 0.1, 20)
    assert behaviour.garbage and not behaviour.fail and not behaviour.unreachable


@pytest.mark.parametrize(
    "name",
    ["m@explode", "m@slow", "m@slow=-1", "m@slow=abc", "m@fail-after=x", "@fail", "m@fail=1"],
)
def test_bad_suffixes_are_invalid_config(name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        FakeChatClient(name)
    assert info.value.field == "model_name"


def test_concurrent_chats_keep_exact_fail_after_count() -> None:
    client = FakeChatClient("m@fail-after=5@slow=0.01")

    async def one() -> bool:
        try:
            await chat(client)
        except LLMResponseError:
            return False
        return True

    async def run() -> list[bool]:
        return await asyncio.gather(*(one() for _ in range(12)))

    results = asyncio.run(run())
    assert sum(results) == 5
    assert list(itertools.islice(results, 5)) == [True] * 5
