"""``.options(on_commit=db.session)``: queue a job once a SQLAlchemy session commits.

The oldest bug of broker-backed queues: a view creates a row and queues a
job about it; a worker picks the job up before the view's transaction has
committed and reads a row that is not there yet (or that a rollback
removes). With a store in the app's own database the job is inserted in the
same transaction (``session=``, :meth:`~flask_memqueue.storage.base.Storage.put_in_transaction`).
With any other store this module holds the job back and puts it when the
session commits, and drops it when the session rolls back (Celery's
``delay_on_commit``, Django's ``transaction.on_commit``).

The window this leaves: the job is put *after* the commit, by this process.
If the process dies between the commit and the put, or the store refuses the
put (down, full), the data is committed and the job was never queued: at
most once. The failure is logged (``flask_memqueue`` logger, ERROR) and the
returned Job ends ``cancelled`` with the reason as its error.

SQLAlchemy is imported only by apps that use it. The hooks are one pair of
session event listeners per ``Session`` object (``after_commit``,
``after_soft_rollback`` of the outermost transaction), with the jobs waiting in ``session.info``; a savepoint
(``begin_nested``) is not tracked apart from its outer transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("flask_memqueue")

#: Where the deferred puts of a session wait (``session.info`` is the session's own dict).
_PENDING = "flask_memqueue.on_commit"


def session_of(target: Any) -> Any:
    """The SQLAlchemy ``Session`` that ``target`` is or stands for (Flask-SQLAlchemy's
    ``db.session`` is a ``scoped_session``: its session of the current scope).

    :raises TypeError: ``target`` is not a SQLAlchemy session.
    """
    if callable(getattr(target, "registry", None)) and hasattr(target, "session_factory"):
        target = target()
    if not (hasattr(target, "info") and hasattr(target, "get_bind") and hasattr(target, "commit")):
        raise TypeError(
            f"on_commit= must be a SQLAlchemy Session (Flask-SQLAlchemy's db.session), not {type(target).__name__}"
        )
    return target


def defer(target: Any, put: Callable[[], None], drop: Callable[[], None]) -> None:
    """Call ``put()`` after the session's transaction commits, or ``drop()`` if it rolls back."""
    from sqlalchemy import event

    session = session_of(target)
    if not session.in_transaction():
        session.begin()  # so that a rollback before any statement is seen too (it ends this transaction)
    pending: list[tuple[Callable[[], None], Callable[[], None]]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        if not getattr(session, "_memqueue_hooked", False):
            event.listen(session, "after_commit", _committed)
            event.listen(session, "after_soft_rollback", _rolled_back)
            session._memqueue_hooked = True
    pending.append((put, drop))


def _committed(session: Any) -> None:
    for put, _drop in session.info.pop(_PENDING, ()):
        put()  # each put logs its own failure: the commit is done, nothing may undo it


def _rolled_back(session: Any, previous_transaction: Any) -> None:
    if getattr(previous_transaction, "parent", None) is not None:
        return  # a savepoint or an inner transaction: the outer one decides
    for _put, drop in session.info.pop(_PENDING, ()):
        drop()
