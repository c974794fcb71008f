"""The extension object: ``init_app``, the decorators and the enqueue calls.

:class:`MemQueue` holds no app. Tasks and handlers are registered on it (at
import time, before any app exists); everything that belongs to an app lives
in an :class:`~flask_memqueue.state.AppQueue` in ``app.extensions["memqueue"]``,
found through the current app context. Several apps in one process each get
their own queue and consumer.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from flask import Flask, current_app, has_app_context

from .config import PREFIX, SETTINGS, Config, read_config
from .exceptions import ConfigurationError
from .job import Job
from .options import JobOptions, check_changes, eta_at, eta_in
from .registrar import Registrar, refuse_unchecked_limits, warn_main_module
from .runtime.appref import in_isolated_child
from .sigterm import install as install_sigterm_handler
from .sigterm import serves_with_dev_server
from .state import AppQueue, _in_reloader_watcher, _stop_all_for_signal
from .task import Call, Options, Task, run_off_loop

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .amqp import Published
    from .options import JobChanges
    from .workflows import Chain, Chord, Group, GroupCall, Step, Submitter

P = ParamSpec("P")
R = TypeVar("R")
EXTENSION_KEY = "memqueue"
#: The current app, behind Flask's public proxy: one attribute of the proxy and one call
#: (``current_app.extensions`` would go through the proxy's ``__getattr__``, several times slower).
_current_app: Callable[[], Flask] = current_app._get_current_object  # type: ignore[attr-defined]  # typed as Flask


class _HasApp(Protocol):
    app: Flask


class _PublicAppContext:
    """What :func:`_app_context` returns when Flask's context variable has moved: ``.app``."""

    __slots__ = ("app",)

    def __init__(self, app: Flask) -> None:
        self.app = app


def _public_app_context() -> _PublicAppContext:
    """The current app context's app through Flask's public API; LookupError outside one."""
    if not has_app_context():
        raise LookupError("no app context")
    return _PublicAppContext(_current_app())


# The enqueue hot path reads the app through Flask's own context variable: the public
# proxy (_current_app, one more Python call) costs 878 instructions of 13,521 per enqueue,
# 6.5%, above the 5% issue 20 allows (benchmarks/hotpath.py --instructions, both ways). If a
# Flask release moves it, the public way takes over (tests/test_hot_path.py fails then, so
# we hear of it).
try:
    from flask.globals import _cv_app
except ImportError:  # pragma: no cover - a Flask that moved it
    _app_context: Callable[[], _HasApp] = _public_app_context
else:
    _app_context = cast("Callable[[], _HasApp]", _cv_app.get)


class _WorkflowFront:
    """MemQueue's workflow verbs (chain, group, chord, get_group): a part of :class:`MemQueue`,
    apart so that each class stays readable (tests/test_sizes.py)."""

    if TYPE_CHECKING:

        def _queue(self) -> AppQueue: ...

    def _submitter(self) -> Submitter:
        from .workflows import Submitter  # imported on first use: an app without workflows never loads it

        return Submitter(self._enqueue_workflow, self.get_group)

    def _enqueue_workflow(self, steps: list[Step]) -> tuple[list[Job], list[str]]:
        return self._queue().producer.enqueue_workflow(steps)

    def chain(self, *calls: Call[Any]) -> Chain[Any]:
        """``mq.chain(a.s(1), b.s(), c.s(x=2))``: run a, then b with a's result as its first
        positional argument, then c with b's (see :class:`~flask_memqueue.workflows.Chain`).

        ``.delay()`` queues every link in one step of the store and returns the last
        link's Job; its ``wait()`` returns the chain's last result.
        """
        from .workflows import Chain

        return Chain(self._submitter(), calls)

    def group(self, *calls: Call[Any]) -> GroupCall:
        """``mq.group(a.s(1), a.s(2))``: members that run in parallel; ``.delay()`` returns a
        :class:`~flask_memqueue.workflows.Group` (``id``, ``jobs``, ``status``, ``results()``, ``cancel()``)."""
        from .workflows import GroupCall

        return GroupCall(self._submitter(), calls)

    def chord(self, group: GroupCall, callback: Call[R]) -> Chord[R]:
        """``mq.chord(mq.group(...), total.s())``: ``total`` runs once every member succeeded,
        with their results in member order as its first argument; ``.delay()`` returns its Job."""
        from .workflows import Chord

        return Chord(self._submitter(), group, callback)

    def get_group(self, group_id: str) -> Group | None:
        """The group with that id (``Group.id``) in the current app's queue, in any process
        of the app; None if the store holds none of its members any more."""
        if not isinstance(group_id, str):
            raise TypeError(f"a group id is a string, like the one Group.id gives, not {type(group_id).__name__}")
        jobs = self._queue().storage.group_jobs(group_id)
        if not jobs:
            return None
        from .workflows import Group

        return Group(group_id, jobs, self.get_group)


class MemQueue(_WorkflowFront, Registrar):
    """Background jobs for Flask, run after the response by one consumer thread per app.

    .. code-block:: python

        mq = MemQueue()

        @mq.task(retries=3)
        def send_email(to): ...

        def create_app():
            app = Flask(__name__)
            mq.init_app(app)
            return app

    :param app: bind this app now (same as calling :meth:`init_app`).
    """

    def __init__(self, app: Flask | None = None) -> None:
        super().__init__()  # the registry and the hooks (registrar.py)
        self._known = self.registry.known  # what enqueue() looks a function up in first
        if app is not None:
            self.init_app(app)

    # -- binding ---------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Validate the ``MEMQUEUE_*`` config, set up this app's queue, mount the routes.

        The consumer thread is not started here (unless ``MEMQUEUE_AUTOSTART``):
        Flask also loads the app in the reloader's watcher process and in every
        CLI command, which must not run jobs. It starts on the first enqueue or
        the first request.

        :raises RuntimeError: this app has a MemQueue already.
        :raises ConfigurationError: a config key has a bad value (the message names it).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'MemQueue' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        config = read_config(app.config)
        for name, setting in SETTINGS.items():
            app.config.setdefault(PREFIX + name, setting.default)
        self._observe(config)
        queue = AppQueue(self, self.registry, app, config)
        self._check_store(queue, config)
        queue.open_transport()  # MEMQUEUE_AMQP_URL: RabbitMQ carries the messages
        if config.metrics:
            from .metrics import install

            queue.metrics = install(queue)  # None without prometheus_client: the route says what to install
        app.extensions[EXTENSION_KEY] = queue
        self._queues.add(queue)
        if config.time_limit is not None:
            self._use_time_limits()
        self._bind_isolation(app, queue.children, config.isolation_app)
        self._mount(app, queue, config)

    def _observe(self, config: Config) -> None:
        """Install the OpenTelemetry and Sentry hooks when the process has them set up (or
        the config asks): :mod:`flask_memqueue.otel`, :mod:`flask_memqueue.sentry`. Nothing
        is imported, and no hook installed, for a process that has neither."""
        from .otel import tracer_provider_is_set
        from .sentry import sentry_is_initialised

        installed = {type(hook).__name__ for hook in self.hooks}
        if config.opentelemetry or (config.opentelemetry is None and tracer_provider_is_set()):
            if "Tracing" not in installed:
                try:
                    from .otel import Tracing

                    self.add_hook(Tracing())
                except ImportError:
                    raise ConfigurationError(
                        "MEMQUEUE_OPENTELEMETRY = True needs OpenTelemetry: pip install"
                        ' "/path/to/flask-memqueue[otel]" (the opentelemetry-api package), or set it to None'
                    ) from None
        if config.sentry or (config.sentry is None and sentry_is_initialised()):
            if "SentryHook" not in installed:
                try:
                    from .sentry import SentryHook

                    self.add_hook(SentryHook())
                except ImportError:
                    raise ConfigurationError(
                        'MEMQUEUE_SENTRY = True needs sentry-sdk: pip install "/path/to/flask-memqueue[sentry]"'
                        " (sentry-sdk >= 2), or set it to None"
                    ) from None

    def _check_store(self, queue: AppQueue, config: Config) -> None:
        """Refuse an enqueue-only process whose store nobody else sees; warn about ``__main__`` tasks."""
        shared = queue.storage.capabilities.shared
        if not config.consumer and not shared and not queue.app.testing:
            from .storage import SHARED_STORE_EXAMPLE

            queue.storage.close()
            raise ConfigurationError(
                f"MEMQUEUE_CONSUMER = False needs a store that other processes share (MEMQUEUE_STORAGE ="
                f" {SHARED_STORE_EXAMPLE!r}, for example): with {queue.storage_url} the jobs live in this"
                " process, and nobody else could run them (a testing app may step its queue with"
                " mq.run_once() instead)"
            )
        refuse_unchecked_limits(self.registry, queue)
        if shared and (main_tasks := [n for n in self.registry.tasks if n.startswith("__main__.")]):
            warn_main_module(main_tasks)

    def _mount(self, app: Flask, queue: AppQueue, config: Config) -> None:
        """The app's side of the queue: the consumer's start on requests, the routes, the CLI, SIGTERM."""
        # The first request starts the consumer (and a request after it died
        # restarts it). A WSGI wrapper, not a before_request hook: it runs for
        # every request of the app, and a hook costs several times more there.
        app.wsgi_app = _StartConsumer(app.wsgi_app, queue)  # type: ignore[method-assign]
        if config.url_prefix is not None:
            from .blueprint import make_blueprint

            app.register_blueprint(make_blueprint(), url_prefix=config.url_prefix)
        from .cli import memqueue_cli

        app.cli.add_command(memqueue_cli)
        if config.autostart and not _in_reloader_watcher() and not in_isolated_child():
            queue.ensure_consumer()
        if serves_with_dev_server():  # it dies of SIGTERM without a word: see sigterm.py
            install_sigterm_handler(_stop_all_for_signal)

    def _queue(self) -> AppQueue:
        """The current app's queue, with an error that says how to fix its absence."""
        if not has_app_context():
            raise RuntimeError(
                "Working outside of application context: flask-memqueue needs to know which"
                " app's queue to use. Call it from a view or a job, or inside"
                " 'with app.app_context():'."
            )
        app = _current_app()
        try:
            queue: AppQueue = app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                f"The current Flask app {app.name!r} is not registered with this MemQueue."
                " Did you forget to call 'mq.init_app(app)'?"
            ) from None
        if queue.mq is not self:
            raise RuntimeError(
                f"The current Flask app {app.name!r} is registered with another MemQueue instance."
            )
        return queue

    def queue_for(self, app: Flask) -> AppQueue:
        """The queue of ``app`` (for code that holds an app but no context)."""
        try:
            return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(f"app {app.name!r} is not registered; call 'mq.init_app(app)'") from None

    # -- enqueueing ----------------------------------------------------------------
    @overload
    def enqueue(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    def enqueue(self, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` on the current app's queue; returns the :class:`Job`.

        ``func`` is a task, a registered task name, or any callable. Every
        keyword goes to the function: job options have methods of their own
        (:meth:`enqueue_in`, :meth:`enqueue_at`).

        :raises QueueFull: ``MEMQUEUE_MAXSIZE`` jobs wait already.
        :raises UnknownTaskError: ``func`` is a name nobody registered.
        """
        try:  # the hot path, inlined; _queue() explains any failure
            queue: AppQueue | None = _app_context().app.extensions[EXTENSION_KEY]
        except LookupError:  # no app context (LookupError), or no queue on its app (KeyError)
            queue = None
        if queue is None or queue.mq is not self:
            queue = self._queue()
        try:
            task = self._known[func]  # registry.resolve(), its common case inlined
        except (KeyError, TypeError):
            task = self.registry.resolve(func)
        return queue.enqueue(task, args, kwargs)

    @overload
    async def aenqueue(self, func: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args,
                       **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    async def aenqueue(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    async def aenqueue(self, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    async def aenqueue(self, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """:meth:`enqueue` for ``async def`` code (an async view, an async task):
        ``job = await mq.aenqueue(fetch, url)``.

        With a store other processes share the put runs in the loop's default
        executor (with the caller's app context), so the loop goes on while the
        store answers; the in-process memory store is called inline (it never
        waits on I/O). Plain ``enqueue()`` works from async code too; it blocks
        the loop for the store's round trip.

        .. versionadded:: 1.1
        """
        return await run_off_loop(self, self.enqueue, func, *args, **kwargs)

    def blocks_on_io(self) -> bool:
        """True if a put to the current app's store may wait on I/O (a store other processes share)."""
        return bool(self._queue().storage.capabilities.shared)

    def resolve(self, func: Callable[..., Any] | str) -> Task[..., Any]:
        """The task of ``func``: a task, a registered task name, or any callable (a task is made for it).

        :raises UnknownTaskError: ``func`` is a name nobody registered.
        """
        return self.registry.resolve(func)

    def options(self, **changes: Unpack[JobChanges]) -> Options:
        """Job options for the calls made through the returned object:
        ``mq.options(queue="urgent", priority=50).enqueue(func, *args, **kwargs)``
        (also ``.enqueue_in`` and ``.enqueue_at``).

        Options never travel in the job's own keyword arguments, which all go
        to the function. For a task, ``task.options(...).delay(...)`` does the same.

        :param queue: the named queue instead of the task's own.
        :param priority: -100..100 instead of the task's own; higher runs first.
        :param unique_key: while a job with this key waits or runs, return it
            instead of queueing another (see :meth:`Task.options <flask_memqueue.Task.options>`).
        :param session: insert the job through this SQLAlchemy session (Flask-SQLAlchemy's
            ``db.session``) or connection, in its open transaction: it commits or rolls
            back with your data. Needs a store in that database (``postgresql://``).
        :param on_commit: with any store: queue the job once this SQLAlchemy session
            commits; nothing if it rolls back (at most once: see docs/storage).
        :raises ValueError: a bad queue name, priority or key (the message names it).
        """
        return Options(self, **changes)

    def submit(
        self,
        func: Callable[..., Any] | str | Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        options: JobOptions | None = None,
        *,
        eta: float | None = None,
        **changes: Any,
    ) -> Job[Any]:
        """Queue a call with its options whole: what :class:`Options`, ``task.options(...)``
        and a call object (``task.s(...)``) hand on.

        ``options`` is a :class:`~flask_memqueue.job.JobOptions` (its ``eta`` a
        Unix time); without it, ``eta`` and the keywords of :meth:`options`
        (``queue=``, ``priority=``, ...) change the task's own.
        """
        task = self.registry.resolve(func)
        if options is None:
            options = task.job_options.replace(**check_changes(changes, "submit"), eta=eta)
        if options.time_limit is not None or options.isolated is not None or options.memory_limit is not None:
            self._call_options(task, options)
        return self._queue().enqueue(task, args, kwargs, options)

    @overload
    def enqueue_in(
        self, delay: float | _dt.timedelta, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]: ...

    @overload
    def enqueue_in(self, delay: float | _dt.timedelta, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue_in(
        self, delay: float | _dt.timedelta, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` to run ``delay`` seconds (or a timedelta) from now."""
        task = self.registry.resolve(func)
        return self._queue().enqueue(task, args, kwargs, task.job_options.replace(eta=eta_in(delay)))

    @overload
    def enqueue_at(self, when: _dt.datetime, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    def enqueue_at(self, when: _dt.datetime, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue_at(self, when: _dt.datetime, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` to run at ``when``, a timezone-aware datetime.

        A time in the past runs as soon as the consumer can.
        """
        task = self.registry.resolve(func)
        return self._queue().enqueue(task, args, kwargs, task.job_options.replace(eta=eta_at(when)))

    def produce(self, message: Any, topic: str | None = None) -> Job | Published:
        """Queue ``message`` for the handler of ``topic`` (the default handler if None).

        With ``MEMQUEUE_AMQP_URL`` (and not in eager mode) the message is
        published to that handler's RabbitMQ queue instead, and what comes
        back is a :class:`~flask_memqueue.amqp.Published` receipt: the broker
        has confirmed it.

        :raises UnknownTopicError: no handler is registered for that topic.
        :raises BrokerUnavailable: RabbitMQ cannot be reached or did not take the message.
        """
        queue = self._queue()
        return queue.produce(self.registry.handler(topic), message)


    def enqueue_many(self, calls: Iterable[Call[Any]]) -> list[Job[Any]]:
        """Queue many calls at once on the current app's queue; returns their jobs, in order.

        ``calls`` are call objects, ``task.s(...)`` (any mix of tasks), each with the
        options its ``.options(...)`` gave (queue, priority, a time). The store takes
        them in one step (one lock hold in memory, one transaction on SQLite and
        PostgreSQL, one round trip to Redis): all of them or, when
        ``MEMQUEUE_MAXSIZE`` cannot take the whole batch, none. ``job_enqueued`` is
        sent per job::

            jobs = mq.enqueue_many([send.s(a) for a in addresses])

        :raises QueueFull: the batch does not fit: nothing was queued.
        :raises TypeError: an item is not a call object, or does not fit its task's signature.
        :raises ValueError: a call has a unique key, a session or an ``on_commit``
            (those are decided job by job: queue such a call with ``.delay()``).

        .. versionadded:: 3.0
        """
        return self._queue().enqueue_many(calls)

    def pause(self, queue: str) -> bool:
        """Pause the named queue of the current app: jobs are still queued, none starts, in
        every process sharing the store (within a second); running jobs go on. A durable
        store keeps the pause across restarts. True if the queue was not paused.

        :raises ValueError: not a queue name.
        :raises ConfigurationError: the store cannot pause (it does not declare ``pausable``).
        """
        return self._queue().pause(queue)

    def resume(self, queue: str) -> bool:
        """Resume a paused queue (see :meth:`pause`); True if it was paused."""
        return self._queue().resume(queue)

    def paused(self) -> set[str]:
        """The current app's paused queues."""
        return self._queue().paused()

    # -- the queue ---------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        """The job with that id in the current app's queue, if it is still known."""
        return self._queue().get_job(job_id)

    def abort(self, job_id: str, by: str | None = None) -> bool:
        """Stop the job with this id (as :meth:`Job.abort <flask_memqueue.Job.abort>`): a waiting
        one is cancelled; a running one, here or in any process sharing the store, is asked
        to stop and ends ``aborted``. ``by`` says who asks (shown in the job's error).

        :returns: True if it was cancelled or asked to stop; False if it had finished.
        :raises LookupError: no job with that id is known to the store.
        """
        queue = self._queue()
        job = queue.get_job(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r} in the store of app {queue.app.name!r} (finished jobs are"
                              " forgotten after MEMQUEUE_RESULT_TTL)")
        return queue.jobs.abort(job, by)

    def join(self, timeout: float | None = None, queue: str | None = None) -> bool:
        """Block until no job of the current app waits or runs (retries included),
        in every queue, or in ``queue``.

        Returns False if ``timeout`` seconds passed first. For tests and scripts.
        """
        return self._queue().join(timeout, queue)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop taking jobs, run those waiting (with ``wait``), stop the consumer.

        Also runs by itself at interpreter exit, bounded by
        ``MEMQUEUE_SHUTDOWN_TIMEOUT``. Returns True if no job was left unrun.
        Outside an app context (a script's last line, another thread) it
        shuts down the queue of every app this MemQueue bound in this process.
        """
        if has_app_context():
            return self._queue().shutdown(wait=wait, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = True
        for queue in list(self._queues):
            if queue.pid == os.getpid() and not queue.closed:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                drained = queue.shutdown(wait=wait, timeout=left) and drained
        return drained

    def run_once(self, timeout: float | None = 0.0, queue: str | None = None) -> bool:
        """Run the next due job of the current app in this thread; False if there was none.

        With ``queue``, a job of that queue; else of any queue (the default
        queue first; a ``timeout`` waits for the default queue).
        """
        return self._queue().run_once(timeout, queue)


@overload
def enqueue(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...


@overload
def enqueue(func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...


def enqueue(func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
    """Queue a job on the current app's queue, whichever MemQueue bound it.

    For code (blueprints, helpers) that has no handle on the ``mq`` object.
    """
    if not has_app_context():
        raise RuntimeError(
            "Working outside of application context: enqueue() uses the current app's queue."
            " Call it from a view or a job, or inside 'with app.app_context():'."
        )
    app = _current_app()
    queue: AppQueue | None = app.extensions.get(EXTENSION_KEY)
    if queue is None:
        raise RuntimeError(
            f"The current Flask app {app.name!r} has no MemQueue. Did you forget 'mq.init_app(app)'?"
        )
    return queue.enqueue(queue.registry.resolve(func), args, kwargs)


class _StartConsumer:
    """WSGI wrapper: a request to the app starts its consumer if none runs."""

    def __init__(self, wsgi_app: Any, queue: AppQueue) -> None:
        self.wsgi_app = wsgi_app
        self.queue = queue

    def __call__(self, environ: Any, start_response: Any) -> Any:
        queue = self.queue
        if not queue.consumer_alive:
            queue.ensure_consumer(serving=True)
        return self.wsgi_app(environ, start_response)
