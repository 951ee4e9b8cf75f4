"""The deterministic in-memory broker, its transport, and the simulation driver."""

from simq.memory.broker import DeadLetter, MemoryBroker, MemoryTransport, QueueStats

__all__ = ["DeadLetter", "MemoryBroker", "MemoryTransport", "QueueStats"]
