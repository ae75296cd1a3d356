"""A deterministic simulation of the delivery core (ingest, store, spool, dispatcher, sinks).

Seeded random histories of ingest (socket and HTTP, valid and hostile records), seals,
rotations at tiny segment sizes, flushes against faulty sinks, crashes at await points and in
the middle of spool writes, restarts with adoption (one or several processes sharing a spool)
and SHUTDOWN drains, all on virtual time, checked after every step against a model of what
must have happened. See docs/guarantees.md, "The simulation".
"""
