"""A one-slot mailbox between the telemetry source and the screen.

The source may produce views faster than a slow terminal paints them. Instead of queueing
every view (and falling further behind), the mailbox keeps only the newest one; the screen
takes it when it is ready for the next frame. Events are the exception: each view carries the
events new since the previous one, so events of views that were dropped are kept and handed
over together with the view that replaced them.
"""

from __future__ import annotations

from meshdev.telemetry.aggregation.view import Event, MeshView


class ViewMailbox:
    def __init__(self) -> None:
        self._view: MeshView | None = None
        self._events: list[Event] = []
        self.dropped = 0  # views replaced before anyone took them (shown in the debug line)

    def put(self, view: MeshView) -> bool:
        """Store `view`; True when the slot was empty (the reader needs a nudge)."""
        was_empty = self._view is None
        if not was_empty:
            self.dropped += 1
        self._view = view
        self._events.extend(view.events)
        return was_empty

    def take(self) -> tuple[MeshView | None, list[Event]]:
        view, events = self._view, self._events
        self._view, self._events = None, []
        return view, events
