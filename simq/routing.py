"""Exchanges, queues, bindings, and the router that picks where a task goes.

Topic matching is RabbitMQ's, on every backend: keys split on ``.`` (the empty
key has zero words), ``*`` matches exactly one word, ``#`` zero or more words,
and a ``*`` or ``#`` inside a longer word is a literal character.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs

from simq.exceptions import ConfigurationError, NotDelivered, RoutingError, UnknownQueue, Unroutable

__all__ = [
    "EXCHANGE_TYPES",
    "Binding",
    "BindingTable",
    "Exchange",
    "Queue",
    "Route",
    "Router",
    "not_delivered",
    "topic_matches",
    "unroutable",
]

EXCHANGE_TYPES = ("direct", "fanout", "topic")


def _check_type(_inst: object, _attr: object, value: str) -> None:
    if value not in EXCHANGE_TYPES:
        raise ConfigurationError(f"unknown exchange type {value!r}; simq supports {', '.join(EXCHANGE_TYPES)}")


@attrs.frozen
class Exchange:
    """A named router of messages: ``direct`` (exact key), ``topic`` (patterns) or ``fanout`` (all)."""

    name: str
    type: str = attrs.field(default="direct", validator=_check_type)
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] = attrs.field(factory=dict, eq=False)


DEFAULT_EXCHANGE = Exchange("", "direct")


@attrs.frozen
class Binding:
    """``exchange`` routes to the queue messages whose key matches ``routing_key``."""

    exchange: Exchange
    routing_key: str = ""


def _to_exchange(value: Exchange | str | None) -> Exchange | None:
    if value is None or isinstance(value, Exchange):
        return value
    return Exchange(value)


@attrs.frozen
class Queue:
    """A named queue and what it is bound to.

    ``Queue("video", Exchange("tasks", "topic"), routing_key="video.#")`` is
    one binding; ``bindings=[...]`` gives several. A queue with neither is
    bound to a direct exchange of its own name with its name as the key
    (as Celery does for queues it creates).
    """

    name: str
    exchange: Exchange | None = attrs.field(default=None, converter=_to_exchange)
    routing_key: str | None = None
    bindings: tuple[Binding, ...] = attrs.field(default=(), converter=tuple)
    durable: bool = True
    auto_delete: bool = False
    max_priority: int | None = None
    arguments: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("a queue needs a non-empty name")

    @property
    def all_bindings(self) -> tuple[Binding, ...]:
        if self.bindings:
            return self.bindings
        exchange = self.exchange if self.exchange is not None else Exchange(self.name, "direct")
        key = self.routing_key if self.routing_key is not None else self.name
        return (Binding(exchange, key),)

    @property
    def default_exchange(self) -> Exchange:
        return self.all_bindings[0].exchange

    @property
    def default_routing_key(self) -> str:
        return self.all_bindings[0].routing_key


def _split(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


def _match_words(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    # Dynamic programming over (pattern position, key position): at[j] is
    # True when pattern[:i] can match key[:j].
    at = [True] + [False] * len(key)
    for word in pattern:
        if word == "#":
            # zero or more words: once reachable, everything after is reachable
            for j in range(1, len(at)):
                at[j] = at[j] or at[j - 1]
        else:
            for j in range(len(at) - 1, 0, -1):
                at[j] = at[j - 1] and (word == "*" or word == key[j - 1])
            at[0] = False
    return at[-1]


@lru_cache(maxsize=65536)
def topic_matches(pattern: str, key: str) -> bool:
    """Does the topic binding ``pattern`` match routing ``key`` (RabbitMQ semantics)?"""
    return _match_words(_split(pattern), _split(key))


def exchange_routes(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Would a binding with ``binding_key`` on an exchange of this type take ``routing_key``?"""
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "fanout":
        return True
    return topic_matches(binding_key, routing_key)


@attrs.frozen
class Route:
    """Where one message goes: the exchange to publish to, with which key.

    ``queue`` is set when the route was chosen by naming a queue (so a
    transport may declare it first).
    """

    exchange: Exchange
    routing_key: str
    queue: Queue | None = None


RouteSpec = Mapping[str, Any] | Callable[..., Any]


def _normalise_routes(task_routes: Any) -> list[RouteSpec]:
    if task_routes is None:
        return []
    if isinstance(task_routes, Mapping) or callable(task_routes):
        return [task_routes]
    if isinstance(task_routes, Sequence) and not isinstance(task_routes, str):
        return list(task_routes)
    raise ConfigurationError(f"task_routes must be a dict, a callable or a list of them, got {task_routes!r}")


@attrs.define(eq=False)
class Router:
    """Chooses exchange and routing key for a task call.

    Precedence, highest first: options given to ``apply_async``; ``task_routes``
    (exact task name, then glob patterns, in the order given); the task's own
    attributes; the app's defaults.
    """

    queues: dict[str, Queue]
    routes: list[RouteSpec]
    default_queue: str
    default_exchange: Exchange | None
    default_routing_key: str | None
    create_missing_queues: bool = True
    on_new_queue: Callable[[Queue], None] | None = None

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> Router:
        queues: dict[str, Queue] = {}
        for queue in conf.get("task_queues") or ():
            if not isinstance(queue, Queue):
                raise ConfigurationError(f"task_queues entries must be simq.Queue objects, got {queue!r}")
            queues[queue.name] = queue
        default_queue = conf.get("task_default_queue") or "celery"
        default_exchange = None
        if conf.get("task_default_exchange") is not None:
            default_exchange = Exchange(
                conf["task_default_exchange"], conf.get("task_default_exchange_type") or "direct"
            )
        if default_queue not in queues:
            queues[default_queue] = Queue(
                default_queue,
                default_exchange or Exchange(default_queue, conf.get("task_default_exchange_type") or "direct"),
                routing_key=conf.get("task_default_routing_key") or default_queue,
            )
        return cls(
            queues=queues,
            routes=_normalise_routes(conf.get("task_routes")),
            default_queue=default_queue,
            default_exchange=default_exchange,
            default_routing_key=conf.get("task_default_routing_key"),
            create_missing_queues=bool(conf.get("task_create_missing_queues", True)),
        )

    def queue(self, name: str | Queue) -> Queue:
        if isinstance(name, Queue):
            if name.name not in self.queues:
                self.queues[name.name] = name
                if self.on_new_queue is not None:
                    self.on_new_queue(name)
            return self.queues[name.name]
        queue = self.queues.get(name)
        if queue is not None:
            return queue
        if not self.create_missing_queues:
            raise UnknownQueue(
                f"unknown queue {name!r}: not in task_queues ({', '.join(sorted(self.queues))}) "
                "and task_create_missing_queues is off. Declare it in task_queues."
            )
        queue = Queue(name)
        self.queues[name] = queue
        if self.on_new_queue is not None:
            self.on_new_queue(queue)
        return queue

    def _from_routes(self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        for spec in self.routes:
            if callable(spec) and not isinstance(spec, Mapping):
                found = spec(name, args, kwargs, options)
                if found:
                    return _route_dict(found)
                continue
            if name in spec:
                return _route_dict(spec[name])
            for pattern, value in spec.items():
                if isinstance(pattern, re.Pattern):
                    if pattern.match(name):
                        return _route_dict(value)
                elif any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
                    return _route_dict(value)
        return {}

    def route(
        self,
        name: str,
        task_options: Mapping[str, Any],
        call_options: Mapping[str, Any],
        args: Any = (),
        kwargs: Any = None,
    ) -> Route:
        levels = [
            task_options,
            self._from_routes(name, args, kwargs, call_options) if self.routes else {},
            call_options,
        ]
        queue: Any = None
        exchange: Any = None
        routing_key: Any = None
        # Walk from lowest to highest precedence; a queue named at a level
        # resets exchange and key chosen at lower levels.
        for level in levels:
            if level.get("queue") is not None:
                queue = level["queue"]
                exchange = None
                routing_key = None
            if level.get("exchange") is not None:
                exchange = level["exchange"]
            if level.get("routing_key") is not None:
                routing_key = level["routing_key"]
        q = self.queue(queue) if queue is not None else None
        if exchange is not None:
            ex = exchange if isinstance(exchange, Exchange) else self._exchange_named(exchange)
        elif q is not None:
            ex = q.default_exchange
        elif self.default_exchange is not None:
            ex = self.default_exchange
        else:
            q = self.queues[self.default_queue]
            ex = q.default_exchange
        if routing_key is None:
            if q is not None:
                routing_key = q.default_routing_key
            elif self.default_routing_key is not None:
                routing_key = self.default_routing_key
            else:
                routing_key = self.default_queue
        return Route(ex, routing_key, q)

    def _exchange_named(self, name: str) -> Exchange:
        if name == "":
            return DEFAULT_EXCHANGE
        for exchange in self.exchanges():
            if exchange.name == name:
                return exchange
        return Exchange(name, "direct")

    def exchanges(self) -> list[Exchange]:
        seen: dict[str, Exchange] = {}
        if self.default_exchange is not None:
            seen[self.default_exchange.name] = self.default_exchange
        for queue in self.queues.values():
            for binding in queue.all_bindings:
                seen.setdefault(binding.exchange.name, binding.exchange)
        return list(seen.values())


def _route_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"queue": value}
    if isinstance(value, Queue):
        return {"queue": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigurationError(f"a task route must be a queue name, a Queue or a dict of options, got {value!r}")


@attrs.define
class BindingTable:
    """The exchanges, queues and bindings one broker holds, routed by RabbitMQ's rules.

    Every broker simq routes for itself uses one: the memory broker (its
    whole state), the Redis transport (a copy of the table kept in Redis,
    shared by every process on a namespace) and the AMQP transport (what this
    process declared, for the emulated ``immediate`` check; RabbitMQ routes).
    ``route`` answers from a cache that any change to the table empties.
    """

    exchanges: dict[str, str] = attrs.field(factory=dict)  # name -> type
    bindings: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)  # exchange -> [(binding key, queue)]
    queues: dict[str, None] = attrs.field(factory=dict)  # names, in declaration order
    _routes: dict[tuple[str, str], list[str]] = attrs.field(factory=dict, init=False)

    def add_exchange(self, name: str, kind: str) -> bool:
        """Record exchange ``name``; True if it is new. Refuses another type under a known name."""
        existing = self.exchanges.get(name)
        if existing is not None:
            if existing != kind:
                raise RoutingError(f"exchange {name!r} already declared as {existing!r}, not {kind!r}")
            return False
        self.exchanges[name] = kind
        self.bindings[name] = []
        self._routes.clear()
        return True

    def add_queue(self, queue: Queue) -> bool:
        """Record ``queue``, its bindings and their exchanges; True if anything was new."""
        changed = queue.name not in self.queues
        self.queues[queue.name] = None
        for binding in queue.all_bindings:
            exchange = binding.exchange
            if exchange.name == "":
                continue
            changed |= self.add_exchange(exchange.name, exchange.type)
            pair = (binding.routing_key, queue.name)
            table = self.bindings[exchange.name]
            if pair not in table:
                table.append(pair)
                changed = True
        if changed:
            self._routes.clear()
        return changed

    def replace(
        self, exchanges: dict[str, str], bindings: dict[str, list[tuple[str, str]]], queues: Iterable[str]
    ) -> None:
        """Take a whole table read from elsewhere (the Redis copy)."""
        self.exchanges = dict(exchanges)
        self.bindings = {name: list(bindings.get(name, ())) for name in exchanges}
        self.queues = dict.fromkeys(queues)
        self._routes.clear()

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` routes ``routing_key`` to, each once; the table's own list, not to be changed.

        The default exchange (``""``) routes to the queue named by the key.
        ``RoutingError`` if ``exchange`` is not in the table.
        """
        key = (exchange, routing_key)
        targets = self._routes.get(key)
        if targets is not None:
            return targets
        if exchange == "":
            targets = [routing_key] if routing_key in self.queues else []
        else:
            kind = self.exchanges.get(exchange)
            if kind is None:
                raise RoutingError(f"no exchange named {exchange!r} is declared on this broker")
            targets = []
            for binding_key, queue in self.bindings[exchange]:
                if queue not in targets and exchange_routes(kind, binding_key, routing_key):
                    targets.append(queue)
        self._routes[key] = targets
        return targets


def unroutable(exchange: str, routing_key: str, detail: str = "") -> Unroutable:
    """The error of a ``mandatory`` publish no queue takes, the same on every broker."""
    said = f" ({detail})" if detail else ""
    return Unroutable(
        f"no queue is bound to exchange {exchange or '(default)'!r} for routing key {routing_key!r} "
        f"(mandatory=True{said}); bind a queue or fix the key"
    )


def not_delivered(routing_key: str, targets: Sequence[str], detail: str) -> NotDelivered:
    """The error of an ``immediate`` publish no consumer can take now, the same on every broker."""
    return NotDelivered(
        f"no consumer can take a message for {routing_key!r} now (immediate=True{detail}): "
        f"queues {list(targets)} have no consumer with free prefetch or already hold messages"
    )
