"""The data that crosses module boundaries: batches, write results and the sink contract.

Standard library only, so that ``import capture_ext`` stays cheap and a third-party sink can
depend on these names without pulling in the extension's runtime.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from capture_ext.variables import Variable

#: An enriched record as sinks see it: the user's fields plus ``function_name``,
#: ``function_version``, ``environment_id``, ``captured_at`` and ``sequence``; ``inference_id``
#: (a string) is always there. A mapping, not a closed TypedDict: ``capture_prepare_record``
#: hooks may add top-level fields, and a TypedDict that allows extra keys (PEP 728) is not in
#: Python 3.11's ``typing``.
Record = dict[str, Any]


class Outcome(enum.Enum):
    """What a sink says about a batch; the dispatcher decides what happens next."""

    OK = "ok"
    RETRYABLE = "retryable"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The answer of :meth:`Sink.write_batch`.

    Sinks classify, the dispatcher acts: it retries ``RETRYABLE`` with backoff inside the
    deadline, and counts ``FATAL`` records as dropped. A sink never sleeps or retries on its own.

    Which records a retry resends: the positions in ``failed_indices`` (preferred: exact), else
    the records named by ``failed_ids`` when each id names one record of the batch, else the
    whole batch. Client ids are not unique; when two records of a batch share an id, naming it
    cannot say which one failed, so the whole batch goes again. A sink that writes objects (one
    per partition, say) must name every record of each object it needs rewritten: a retry carries
    exactly the records named.
    """

    outcome: Outcome
    error: str | None = None
    #: ``inference_id`` of the records that failed; empty means "all of them" when not OK.
    failed_ids: tuple[str, ...] = ()
    #: A throttling hint from the service (seconds), honoured by the dispatcher's backoff.
    retry_after_s: float | None = None
    #: Positions in ``batch.records`` of the records that failed (wins over ``failed_ids``).
    failed_indices: tuple[int, ...] = ()

    @classmethod
    def ok(cls) -> WriteResult:
        return cls(Outcome.OK)

    @classmethod
    def retryable(
        cls,
        error: str,
        failed_ids: Sequence[str] = (),
        retry_after_s: float | None = None,
        *,
        failed_indices: Sequence[int] = (),
    ) -> WriteResult:
        return cls(Outcome.RETRYABLE, error, tuple(failed_ids), retry_after_s, tuple(failed_indices))

    @classmethod
    def fatal(cls, error: str) -> WriteResult:
        return cls(Outcome.FATAL, error)

    @property
    def is_ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True)
class Batch:
    """A sealed group of records with an identity that survives retries and restarts.

    ``batch_id`` is ``<environment_id>-<sequence:08d>``; sinks derive object keys from it so a
    retried batch overwrites its own output instead of duplicating it. A retry of a partial
    failure is a new ``Batch`` with the same ``batch_id`` and fewer records.
    """

    batch_id: str
    environment_id: str
    sequence: int
    records: tuple[Record, ...]
    #: 1 for the first try; the dispatcher increments it on each retry.
    attempt: int = 1

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, positions: Iterable[int], attempt: int) -> Batch:
        """The records at ``positions`` (indices into ``records``), in batch order."""
        kept = tuple(self.records[index] for index in sorted(set(positions)))
        return Batch(self.batch_id, self.environment_id, self.sequence, kept, attempt)


#: Where a plugin author reads what changed in the sink contract.
CONTRACT_DOC = "docs/writing-sinks.md#configuration"


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What the extension gives a sink factory, once at start-up: the same for built-in and plugin sinks.

    A sink reads its own settings from ``env`` (built-ins through a config object, see
    :mod:`capture_ext.variables`); ``env`` is the extension's environment, or what a test passes.
    """

    name: str
    env: Mapping[str, str]
    function_name: str
    function_version: str = "$LATEST"
    environment_id: str = "local"
    region: str = "us-east-1"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("capture_ext.sinks"))

    if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise accept any attribute

        def __getattr__(self, attr: str) -> Any:
            # Only reached for names the context lacks: say what replaced the old ``settings``.
            if attr == "settings":
                raise AttributeError(
                    f"SinkContext has no 'settings' any more (sink {self.name!r}): read your CAPTURE_<SINK>_* "
                    f"variables from ctx.env, e.g. with a capture_ext.variables.EnvConfig; see {CONTRACT_DOC}",
                    name=attr,
                    obj=self,
                )
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}", name=attr, obj=self)


@runtime_checkable
class Sink(Protocol):
    """The contract every sink meets (built-in or plugin).

    - ``start()`` is called once before the first batch; open clients lazily here or on first use.
    - ``write_batch()`` must not raise for expected failures: classify them into a
      :class:`WriteResult`. An unexpected exception is treated as ``RETRYABLE``.
    - ``close(timeout_s)`` releases resources within ``timeout_s``; it is idempotent, and a
      ``write_batch`` after it returns ``FATAL``.
    """

    name: str

    async def start(self) -> None: ...

    async def write_batch(self, batch: Batch) -> WriteResult: ...

    async def close(self, timeout_s: float) -> None: ...


SinkFactory = Callable[[SinkContext], Sink]


class SinkRegistrar(Protocol):
    """The ``register`` argument of the ``capture_register_sinks`` hook.

    ``variables`` are the environment variables the sink reads (its config object's
    ``variables()``): ``capture-ext plugins`` lists them, the configuration check validates them
    for the sinks in ``CAPTURE_SINKS``, and the built-ins' are the sink table of
    docs/configuration.md.
    """

    def __call__(self, name: str, factory: SinkFactory, *, variables: Sequence[Variable] = ()) -> None: ...
