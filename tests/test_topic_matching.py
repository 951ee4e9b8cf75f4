"""Topic matching agrees with an independent reference matcher on random tables and keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simq.routing import topic_matches


def reference_match(pattern: str, key: str) -> bool:
    """RabbitMQ's rules, written as plain recursion over word lists."""

    def words(text: str) -> list[str]:
        return text.split(".") if text else []

    def go(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        head, rest = p[0], p[1:]
        if head == "#":
            return any(go(rest, k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (head == "*" or head == k[0]) and go(rest, k[1:])

    return go(words(pattern), words(key))


WORDS = st.sampled_from(["a", "b", "stock", "usd", "", "a*", "x#"])
PATTERN_WORDS = st.one_of(WORDS, st.just("*"), st.just("#"))


def _join(parts: list[str]) -> str:
    return ".".join(parts)


keys = st.lists(WORDS, max_size=5).map(_join)
patterns = st.lists(PATTERN_WORDS, max_size=5).map(_join)


@settings(max_examples=400, deadline=None)
@given(pattern=patterns, key=keys)
def test_topic_matches_agrees_with_reference(pattern, key):
    assert topic_matches(pattern, key) == reference_match(pattern, key)


@settings(max_examples=100, deadline=None)
@given(table=st.lists(st.tuples(patterns, st.sampled_from(["q1", "q2", "q3"])), max_size=6), key=keys)
def test_routing_a_key_through_a_binding_table_agrees_with_reference(table, key):
    from simq import Exchange, Queue
    from simq.memory.broker import MemoryBroker

    broker = MemoryBroker()
    ex = Exchange("t", "topic")
    broker.declare_exchange(ex)
    for pattern, queue in table:
        broker.declare_queue(Queue(queue, ex, routing_key=pattern))
    expected = []
    for pattern, queue in table:
        if reference_match(pattern, key) and queue not in expected:
            expected.append(queue)
    assert sorted(broker.route("t", key)) == sorted(expected)


def test_seed_examples():
    assert topic_matches("*.stock.#", "usd.stock")
    assert topic_matches("*.stock.#", "euro.stock.db")
    assert not topic_matches("*.stock.#", "stock.nasdaq")
    assert topic_matches("a.#", "a")
    assert not topic_matches("a.*", "a.b.c")
    assert not topic_matches("*", "")
    assert topic_matches("#", "")
    assert topic_matches("a*", "a*") and not topic_matches("a*", "ab")
