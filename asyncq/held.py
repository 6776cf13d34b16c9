"""A child's finished tasks whose final states go to Redis together.

Storing a final state and acknowledging its message costs a round trip. A child
that runs short acks-late tasks (under ``SHORT_TASK``) holds their ends
(``Ending``) and sends those of several tasks in one round trip
(``Broker.finish_many``): at the end of its batch, in the round trip of its next
fetch (so never while it waits for new messages), and, through a small thread
(``watch``), once the oldest has waited ``limit`` seconds while the next task runs
(the round trip then overlaps that task). (A task whose hooks must see its state
stored is not held at all; the child sends what it holds before a task not known
to be short.) So a result is late by at most twice ``limit`` (the thread looks
every ``limit`` seconds) plus one round trip.

Only acks-late tasks are held: if the child dies first, their messages are
still in its in-flight list and the tasks run again, as any acks-late task
whose child died before its acknowledgement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple

from asyncq.broker import NOT_SENT, Ending
from asyncq.scripts import Command

# A task that ran for less than this (seconds) is short: its end may be held. Up to
# here a round trip saved (a few hundred microseconds when Redis must be woken) is
# worth more than the 2 x limit + one round trip its result may wait; beyond, neither.
SHORT_TASK = 0.05


class Ended(NamedTuple):
    """A held end that was sent: whether it stored the final state, and the task's
    runtime (for its event)."""

    end: Ending
    runtime: float | None
    stored: bool


class HeldEnds:
    """The held ends of one child; ``send`` is ``Broker.finish_many`` under the
    child's outage handling."""

    def __init__(self, send: Callable[[list[Ending], Command | None], tuple[list[bool], Any]],
                 limit: float, show: Callable[[list[str]], None] = lambda ids: None):
        self.send = send
        self.show = show  # tells the supervisor which tasks ran with their ends held
        self.limit = limit
        self.held: list[tuple[Ending, float | None]] = []
        self.since = 0.0  # when the oldest held end was held (monotonic)
        self.sent: list[Ended] = []  # sent by the thread, not yet reported
        self.in_flight: list[tuple[Ending, float | None]] = []  # being sent now
        self.sending = threading.Lock()  # one send at a time, held across its round trip
        self.lock = threading.Lock()  # the lists, never across a round trip: ``add`` is quick
        self.last_added = 0.0
        self.asleep = False  # the thread waits for ``wake`` (nothing held for a while)
        self.wake = threading.Event()
        # Tasks whose last run here was short: only these run while ends are held (a
        # task that kills its child would take those ends with it).
        self.short: set[str] = set()

    def known_short(self, task_name: str) -> bool:
        return task_name in self.short

    def learn(self, task_name: str, runtime: float | None) -> bool:
        """Note how long a task just ran; returns whether its end may be held: it was
        short (a longer task's state is stored before anything else happens)."""
        if self.limit > 0 and runtime is not None and runtime < SHORT_TASK:
            self.short.add(task_name)
            return True
        self.short.discard(task_name)
        return False

    def add(self, end: Ending, runtime: float | None) -> list[Ended]:
        """Hold an end; returns the ends the thread sent meanwhile (the child reports
        them). No more than a batch is ever held: its ends go with the next fetch."""
        with self.lock:
            self.last_added = time.monotonic()
            if not self.held:
                self.since = self.last_added
            self.held.append((end, runtime))
            self._show()
        if self.asleep:
            self.wake.set()
        return self.report()

    def flush(self) -> list[Ended]:
        """Send every held end now; returns them with the ends the thread sent."""
        with self.sending:
            self._send_held()
        return self.report()

    def flush_with(self, fetch: Command) -> tuple[list[Ended], Any]:
        """``flush``, with the child's next fetch in the same round trip; returns the ends
        and what the fetch answered (NOT_SENT if it was not sent: nothing was held, or
        ``Broker.finish_many`` kept it back). A send of the thread's goes first, so the
        fetch never finds the in-flight list still holding acknowledged messages."""
        with self.sending:
            answer = self._send_held(fetch)
        return self.report(), answer

    def report(self) -> list[Ended]:
        """The ends the thread sent since the last call."""
        with self.lock:
            return self._take_sent()

    def watch(self) -> None:
        """A thread: every ``limit`` seconds, sends held ends that waited that long (a
        longer task runs meanwhile). After a second with nothing held it sleeps until
        the next end is held, rather than wake for nothing."""
        while True:
            time.sleep(self.limit)
            with self.sending:
                if self.held and time.monotonic() - self.since >= self.limit:
                    with suppress(Exception):  # the child's own flush tries again
                        self._send_held()
            if time.monotonic() - self.last_added > 1.0:
                self.asleep = True  # before the look below: ``add`` then wakes it
                with self.lock:
                    idle = not self.held
                if idle:
                    self.wake.wait()
                self.wake.clear()
                self.asleep = False

    def _send_held(self, fetch: Command | None = None) -> Any:
        """(Holding ``sending``.) The ends are taken out of the list for the round trip,
        so that ``add`` never waits for it; on an error they are held again, first, for
        the caller to handle."""
        with self.lock:
            if not self.held:
                return NOT_SENT
            ends, self.held, self.in_flight = self.held, [], self.held
        try:
            stored, answer = self.send([end for end, _ in ends], fetch)
        except BaseException:
            with self.lock:
                self.held[:0], self.in_flight = ends, []
            raise
        with self.lock:
            self.in_flight = []
            self._show()
            self.sent += [Ended(end, runtime, ok) for (end, runtime), ok in
                          zip(ends, stored, strict=True)]
        return answer

    def _show(self) -> None:
        """(Under the lock.) Tell the supervisor which ended tasks are not acknowledged yet."""
        self.show([end.message.id for end, _ in self.in_flight + self.held])

    def _take_sent(self) -> list[Ended]:
        sent, self.sent = self.sent, []
        return sent

    def take_held(self) -> list[tuple[Ending, float | None]]:
        """Give up the held ends unsent (the child ends them one by one instead)."""
        with self.sending, self.lock:
            held, self.held = self.held, []
            self._show()
            return held
