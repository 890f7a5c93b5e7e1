"""
A worker's lifecycle as the master sees it, as an explicit state machine.

    none --online--> online --listening--> listening
      any live state --channelLost--> disconnected --exited--> dead
      any live state --exited--> dead   (the disconnect is reported first)
      none --inheritedOnline--> online, none --inheritedListening--> listening

The last two are for a worker the master's previous image started (an
upgrade in place): it arrives in the state it had, without its events again.

Node's C{worker.state} names are the state names; each event of Node's
cluster (C{online}, C{listening}, C{disconnect}, C{death}) fires on the
transition that means it, so each fires once and in order.  A transition
sets the core's C{state} to the name of the state it enters (the machine's
own, not a copy) before it emits, so listeners see the new state.
"""

from __future__ import annotations

from typing import Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.interfaces import IAddress


class Lifecycle(Protocol):
    """
    The inputs of a worker's lifecycle.
    """

    def online(self) -> None:
        "The worker's channel said it is running."

    def listening(self, address: IAddress) -> None:
        "The worker took a listening socket."

    def channelLost(self) -> None:
        "The channel to the worker closed."

    def exited(self, exitCode: int | None, signal: str | None) -> None:
        "The worker's process exited."

    def inheritedOnline(self) -> None:
        "The previous master image had the worker online."

    def inheritedListening(self) -> None:
        "The previous master image had the worker listening."


class LifecycleCore(Protocol):
    """
    What the machine's transitions tell: the worker handle emits the events.
    """

    state: str

    def _emitOnline(self) -> None: ...

    def _emitListening(self, address: IAddress) -> None: ...

    def _emitDisconnect(self) -> None: ...

    def _emitDeath(self, exitCode: int | None, signal: str | None) -> None: ...


def _build() -> TypeMachineBuilder[Lifecycle, LifecycleCore]:
    builder = TypeMachineBuilder(Lifecycle, LifecycleCore)  # type: ignore[type-abstract]
    none = builder.state("none")
    online = builder.state("online")
    listening = builder.state("listening")
    disconnected = builder.state("disconnected")
    dead = builder.state("dead")

    @pep614(none.upon(Lifecycle.online).to(online))
    def becomeOnline(machine: Lifecycle, core: LifecycleCore) -> None:
        core.state = online.name
        core._emitOnline()

    for state in (none, online, listening):

        @pep614(state.upon(Lifecycle.listening).to(listening))
        def listen(machine: Lifecycle, core: LifecycleCore, address: IAddress) -> None:
            core.state = listening.name
            core._emitListening(address)

        @pep614(state.upon(Lifecycle.channelLost).to(disconnected))
        def disconnect(machine: Lifecycle, core: LifecycleCore) -> None:
            core.state = disconnected.name
            core._emitDisconnect()

        @pep614(state.upon(Lifecycle.exited).to(dead))
        def dieConnected(
            machine: Lifecycle,
            core: LifecycleCore,
            exitCode: int | None,
            signal: str | None,
        ) -> None:
            # Node reports the disconnect first, even when both come at once.
            core.state = disconnected.name
            core._emitDisconnect()
            core.state = dead.name
            core._emitDeath(exitCode, signal)

    @pep614(none.upon(Lifecycle.inheritedOnline).to(online))
    def inheritOnline(machine: Lifecycle, core: LifecycleCore) -> None:
        core.state = online.name

    @pep614(none.upon(Lifecycle.inheritedListening).to(listening))
    def inheritListening(machine: Lifecycle, core: LifecycleCore) -> None:
        core.state = listening.name

    # An Online or a listen already on the wire when the channel went.
    online.upon(Lifecycle.online).loop().returns(None)
    listening.upon(Lifecycle.online).loop().returns(None)
    disconnected.upon(Lifecycle.online).loop().returns(None)
    disconnected.upon(Lifecycle.listening).loop().returns(None)

    @pep614(disconnected.upon(Lifecycle.exited).to(dead))
    def die(
        machine: Lifecycle,
        core: LifecycleCore,
        exitCode: int | None,
        signal: str | None,
    ) -> None:
        core.state = dead.name
        core._emitDeath(exitCode, signal)

    dead.upon(Lifecycle.channelLost).loop().returns(None)
    dead.upon(Lifecycle.online).loop().returns(None)
    dead.upon(Lifecycle.listening).loop().returns(None)
    return builder


lifecycleMachine = _build().build()
