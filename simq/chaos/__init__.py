"""The real-broker campaign: a seeded workload on real ``simq worker`` processes, a seeded nemesis, a ledger.

``simq chaos --transport URL`` (also ``simq campaign --transport URL``) draws a
workload (plain tasks, retries with countdown, failing tasks, chains, groups,
chords; late and early acks) and a fault schedule (SIGKILL, SIGTERM and
double SIGINT of workers, broker and backend connection kills, RabbitMQ
``stop_app``/``start_app``, a Redis stall, raw poison on the queues) from one
``random.Random(seed)``, runs it against worker processes started as a user
starts them, and judges what happened from a ledger the tasks write to a
Redis of their own, not from simq's result backend alone.

One job per module:

- ``tasks``: the campaign's task module, loaded by the workers (``-A``);
- ``ledger``: the execution ledger (written by tasks, read by the checker);
- ``workload``: the jobs a seed draws, how each is sent, what the oracle expects;
- ``poison``: raw bytes and wrong structures written straight onto a queue;
- ``procs``: worker processes (start, signal, restart) and which sockets are theirs;
- ``nemesis``: the fault schedule a seed draws and the faults themselves;
- ``checker``: the verdict, per guarantee, from plain data (unit-tested on synthetic ledgers);
- ``runner``: one run: brokers, workers, sender, nemesis lanes, settling;
- ``report``: the evidence kept on disk, the report printed, the broker left clean;
- ``command``: the command line.
"""
