"""
The supervisor's one record per worker: what each is for, since when, and
what the policies (spares, watchdog, recycling, reload, scaling) found.

Policies read and mark records; the supervisor's reconcile step acts on
them.  A record's role changes only along L{MOVES}: anything else is a bug
and raises L{IllegalTransition}.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from .process import Worker


class Role(Enum):
    """
    What a worker is for.
    """

    spare = "spare"
    "Loaded the app and waits to be given a slot."
    starting = "starting"
    "Its app is starting."
    serving = "serving"
    "Its app has started."
    retiring = "retiring"
    "Asked to go (replaced, scaled down, a dropped spare): its death is no crash."
    dead = "dead"
    "Its process has exited."


MOVES: dict[Role, frozenset[Role]] = {
    Role.spare: frozenset({Role.starting, Role.retiring, Role.dead}),
    Role.starting: frozenset({Role.serving, Role.retiring, Role.dead}),
    Role.serving: frozenset({Role.retiring, Role.dead}),
    Role.retiring: frozenset({Role.dead}),
    Role.dead: frozenset(),
}


class IllegalTransition(Exception):
    """
    Something was told to enter a state it cannot reach from where it is.
    """


KEEP_DEAD = 64
"""How many records of dead workers a roster keeps, for who asks later."""


class Recycle(NamedTuple):
    """
    Why a serving worker should be replaced: C{cause} is C{"memory"} or
    C{"age"} (a metric's label), C{why} says it for people.
    """

    cause: str
    why: str


CAUSES = ("crash", "signal", "hang", "memory", "age", "reload")
"""Why a worker was replaced, as the restart counts say."""


@dataclass
class Figures:
    """
    What a worker uses and does, as its last heartbeat answer said.

    @ivar roundTrip: seconds that heartbeat took to come back.
    """

    open: int = 0
    accepted: int = 0
    roundTrip: float | None = None

    def heard(self, figures: dict[str, int], roundTrip: float) -> None:
        self.open = figures.get("open", self.open)
        self.accepted = figures.get("accepted", self.accepted)
        self.roundTrip = roundTrip


@dataclass(eq=False)
class WorkerRecord:
    """
    All the supervisor knows of one worker.

    @ivar failures: quick deaths in a row of the workers it replaces.
    @ivar bootFailures: of those, deaths before their app started.
    @ivar upSince: when its app started, if it has.
    @ivar lastHeard: when it last answered a heartbeat (the watchdog's).
    @ivar hung: seconds it had been silent when it was found hung, if it
        was (it is being killed; its death is a crash even if retiring).
    @ivar recycle: why it should be replaced while it serves (too old, too
        fat), once a policy said so.
    @ivar replacement: the record of the worker starting to replace it.
    @ivar fate: for a replacement, fires with whether it came up.
    @ivar exitReason: how it died.
    @ivar figures: what its last heartbeat answer said.
    """

    worker: Worker
    role: Role
    bornAt: float
    failures: int = 0
    bootFailures: int = 0
    upSince: float | None = None
    lastHeard: float | None = None
    pinging: bool = False
    hung: float | None = None
    recycle: Recycle | None = None
    recycling: bool = False
    replacement: WorkerRecord | None = None
    fate: Deferred[bool] | None = None
    exitReason: str | None = None
    figures: Figures = field(default_factory=Figures)
    _timers: dict[str, IDelayedCall] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> int:
        return self.worker.id

    @property
    def slot(self) -> int:
        return self.worker.slots[0]

    def enter(self, role: Role) -> None:
        """
        Move to C{role}.

        @raise IllegalTransition: if it cannot go there from its role.
        """
        if role is self.role:
            return
        if role not in MOVES[self.role]:
            raise IllegalTransition(
                f"worker {self.id} cannot go from {self.role.value} to {role.value}"
            )
        self.role = role

    @property
    def state(self) -> str:
        """
        What status and metrics call it: its role's name, or C{"hung"}.
        """
        return "hung" if self.hung is not None else self.role.value

    @property
    def inService(self) -> bool:
        """
        Whether it may be given connections: not on its way out, nor hung.
        """
        return self.role in (Role.starting, Role.serving) and self.hung is None

    @property
    def staying(self) -> bool:
        """
        Whether it counts towards the number of workers wanted.
        """
        return self.role in (Role.starting, Role.serving)

    def cancelTimers(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    def cancelTimer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()


class Roster:
    """
    The records of a supervisor's workers, live ones by id and the last
    L{KEEP_DEAD} dead ones.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._live: dict[int, WorkerRecord] = {}
        self._slotRestarts: dict[int, int] = {}
        # How many workers were replaced, by cause (one of CAUSES).
        self.restarts: Counter[str] = Counter({cause: 0 for cause in CAUSES})
        self.dead: deque[WorkerRecord] = deque(maxlen=KEEP_DEAD)

    def add(
        self, worker: Worker, role: Role, failures: int = 0, bootFailures: int = 0
    ) -> WorkerRecord:
        record = WorkerRecord(
            worker,
            role,
            bornAt=self._clock.seconds(),
            failures=failures,
            bootFailures=bootFailures,
        )
        self._live[worker.id] = record
        return record

    def get(self, worker: Worker) -> WorkerRecord | None:
        return self._live.get(worker.id)

    def __iter__(self) -> Iterator[WorkerRecord]:
        """
        The live records, oldest first.
        """
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    def having(self, *roles: Role) -> list[WorkerRecord]:
        """
        The live records in one of C{roles}, oldest first.
        """
        return [r for r in self._live.values() if r.role in roles]

    def serving(self) -> list[WorkerRecord]:
        """
        The workers that are up, in service (not retiring, not hung), oldest
        first.
        """
        live = self._live.values()
        return [r for r in live if r.role is Role.serving and r.inService]

    def restartsOf(self, slot: int) -> int:
        """
        How many workers of C{slot} died unasked.
        """
        return self._slotRestarts.get(slot, 0)

    def died(self, record: WorkerRecord, reason: str, crashed: bool) -> None:
        """
        C{record}'s worker died: it moves to the dead, and its slot counts a
        restart if it C{crashed}.
        """
        record.cancelTimers()
        record.enter(Role.dead)
        record.exitReason = reason
        if crashed and record.slot >= 0:
            self._slotRestarts[record.slot] = self._slotRestarts.get(record.slot, 0) + 1
        self._live.pop(record.id, None)
        self.dead.append(record)

    def handover(self) -> dict[str, Any]:
        """
        The live records and the restart counts, for the master's next image.
        """
        return {
            "restarts": dict(self.restarts),
            "slotRestarts": {str(k): v for k, v in self._slotRestarts.items()},
            "records": [
                {
                    "id": r.id,
                    "role": r.role.value,
                    "bornAt": r.bornAt,
                    "failures": r.failures,
                    "bootFailures": r.bootFailures,
                    "upSince": r.upSince,
                }
                for r in self._live.values()
            ],
        }

    def inherit(self, handed: Mapping[str, Any], workers: Mapping[int, Worker]) -> None:
        """
        Go on from the records the previous image handed over (L{handover}),
        of C{workers} (by id).
        """
        self.restarts.update(
            {k: int(v) for k, v in handed["restarts"].items() if k in CAUSES}
        )
        self._slotRestarts.update(
            {int(k): int(v) for k, v in handed["slotRestarts"].items()}
        )
        now = self._clock.seconds()
        for body in handed["records"]:
            worker = workers.get(int(body["id"]))
            if worker is None:
                continue
            record = self.add(
                worker,
                Role(body["role"]),
                int(body["failures"]),
                int(body["bootFailures"]),
            )
            record.bornAt = float(body["bornAt"])
            upSince = body["upSince"]
            record.upSince = None if upSince is None else float(upSince)
            # Heard now: the gap of the exec is no silence of the worker's.
            record.lastHeard = now

    def later(
        self,
        record: WorkerRecord,
        name: str,
        delay: float,
        f: Callable[..., object],
        *args: object,
    ) -> None:
        """
        Call C{f(*args)} in C{delay} seconds unless C{record}'s worker dies
        or retires first; one timer per C{name}.
        """
        record.cancelTimer(name)

        def fire() -> None:
            record._timers.pop(name, None)
            f(*args)

        record._timers[name] = self._clock.callLater(delay, fire)
