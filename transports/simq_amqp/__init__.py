"""simq's RabbitMQ plugin: AMQP 0-9-1 through kombu's connection and py-amqp channels.

Installed with ``pip install 'simq[amqp]'``; found through the
``simq.transports`` entry-point group for ``amqp://`` and ``pyamqp://`` URLs.
"""

from __future__ import annotations

from simq_amqp.transport import AMQPTransport, amqp_transport_factory

__all__ = ["AMQPTransport", "amqp_transport_factory"]
