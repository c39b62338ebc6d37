"""A race in pynetdicom's SCU (3.0.4), closed for the tests' own senders.

Before it sends a request, ``Association.send_c_store`` (and every ``send_*``) pauses its reactor
thread: it clears ``_reactor_checkpoint`` and waits for ``_is_paused``. But the reactor sets
``_is_paused`` *before* it waits on the checkpoint, and clears it only after: a reactor that
has just passed the checkpoint still looks paused. The sender then sends, and the reactor,
running on, takes the response off the queue as if it were a request ("Received unexpected
C-STORE service message"); the sender waits for it until its DIMSE timeout. The faster the
receiver answers and the busier the machine, the likelier: it is the test's sender failing,
not the receiver.

Here the reactor's non-blocking read returns nothing while the checkpoint is cleared: a
paused sender owns the next message.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider

_get_msg = DIMSEServiceProvider.get_msg


def _get_msg_unless_paused(self: DIMSEServiceProvider, block: bool = False) -> Any:
    if not block and not self.assoc._reactor_checkpoint.is_set():
        return None, None
    return _get_msg(self, block)


def close_the_race() -> None:
    DIMSEServiceProvider.get_msg = _get_msg_unless_paused  # type: ignore[method-assign]
