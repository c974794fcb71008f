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
import warnings
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from flask import Flask
from flask.globals import _cv_app  # behind current_app: one lookup, no proxy (Flask >= 2.2)

from .amqp import AmqpState, Published
from .config import PREFIX, SETTINGS, read_config
from .exceptions import ConfigurationError, MainModuleTaskWarning, ScheduleError
from .job import Job
from .registry import Options, Registry, Task, default_name, eta_at, eta_in, message_task_name
from .sigterm import install as install_sigterm_handler
from .sigterm import serves_with_dev_server
from .state import AppQueue, _in_reloader_watcher, _stop_all_for_signal

P = ParamSpec("P")
R = TypeVar("R")
EXTENSION_KEY = "memqueue"


class _Decorator(Protocol):
    """What ``@mq.task(...)`` returns: a decorator that keeps the function's signature."""

    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


class MemQueue:
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
        #: Tasks and message handlers, shared by every app this binds.
        self.registry = Registry()
        self._known = self.registry.known  # what enqueue() looks a function up in first
        # The queues of the apps this binds (weakly: an app may go away).
        self._queues: weakref.WeakSet[AppQueue] = weakref.WeakSet()
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
        queue = AppQueue(self, self.registry, app, config)
        if not config.consumer and not queue.storage.capabilities.shared and not app.testing:
            from .storage import SHARED_STORE_EXAMPLE

            queue.storage.close()
            raise ConfigurationError(
                f"MEMQUEUE_CONSUMER = False needs a store that other processes share (MEMQUEUE_STORAGE ="
                f" {SHARED_STORE_EXAMPLE!r}, for example): with {queue.storage_url} the jobs live in this"
                " process, and nobody else could run them (a testing app may step its queue with"
                " mq.run_once() instead)"
            )
        if queue.storage.capabilities.shared:
            main_tasks = [n for n in self.registry.tasks if n.startswith("__main__.")]
            if main_tasks:
                _warn_main_module(main_tasks)
        if config.amqp_url is not None:
            try:
                queue.amqp = AmqpState(queue)
            except BaseException:
                queue.storage.close()
                raise
        if config.metrics:
            from .metrics import install

            queue.metrics = install(queue)  # None without prometheus_client: the route says what to install
        app.extensions[EXTENSION_KEY] = queue
        self._queues.add(queue)
        # The first request starts the consumer (and a request after it died
        # restarts it). A WSGI wrapper, not a before_request hook: it runs for
        # every request of the app, and a hook costs several times more there.
        app.wsgi_app = _StartConsumer(app.wsgi_app, queue)  # type: ignore[method-assign]
        if config.url_prefix is not None:
            from .blueprint import make_blueprint

            app.register_blueprint(make_blueprint(), url_prefix=config.url_prefix)
        from .cli import memqueue_cli

        app.cli.add_command(memqueue_cli)
        if config.autostart and not _in_reloader_watcher():
            queue.ensure_consumer()
        if serves_with_dev_server():  # it dies of SIGTERM without a word: see sigterm.py
            install_sigterm_handler(_stop_all_for_signal)

    def _queue(self) -> AppQueue:
        """The current app's queue, with an error that says how to fix its absence."""
        ctx = _cv_app.get(None)
        if ctx is None:
            raise RuntimeError(
                "Working outside of application context: flask-memqueue needs to know which"
                " app's queue to use. Call it from a view or a job, or inside"
                " 'with app.app_context():'."
            )
        try:
            queue: AppQueue = ctx.app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                f"The current Flask app {ctx.app.name!r} is not registered with this MemQueue."
                " Did you forget to call 'mq.init_app(app)'?"
            ) from None
        if queue.mq is not self:
            raise RuntimeError(
                f"The current Flask app {ctx.app.name!r} is registered with another MemQueue instance."
            )
        return queue

    def queue_for(self, app: Flask) -> AppQueue:
        """The queue of ``app`` (for code that holds an app but no context)."""
        try:
            return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(f"app {app.name!r} is not registered; call 'mq.init_app(app)'") from None

    # -- registration --------------------------------------------------------------
    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
    ) -> _Decorator: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
    ) -> Any:
        """Register a function as a task: ``@mq.task`` or ``@mq.task(retries=3, ...)``.

        :param name: what the task is called in job records and when enqueued
            by name; defaults to ``module.qualname``.
        :param retries: how many times a failing job is tried again.
        :param retry_delay: seconds before the first retry.
        :param retry_backoff: each further retry waits this many times longer.
        :param queue: the named queue its jobs wait in (``MEMQUEUE_QUEUES`` declares
            the queues and their threads); a call may choose another with
            :meth:`Task.options <flask_memqueue.Task.options>`.
        :param priority: -100..100, higher runs first within its queue.
        :raises TypeError: a name given positionally (``@mq.task("resize")``).
        """
        if isinstance(func, str):  # else the string would become the "function" of a task
            raise TypeError(f"@mq.task takes a task's name as a keyword: @mq.task(name={func!r})")

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            if isinstance(fn, Task):
                fn = fn.func
            return self._register_task(
                fn, name or default_name(fn), named=name is not None, retries=retries, retry_delay=retry_delay,
                retry_backoff=retry_backoff, queue=queue, priority=priority,
            )

        if func is not None:
            return register(func)
        return register

    def periodic(
        self,
        cron: str | None = None,
        /,
        *,
        every: _dt.timedelta | float | None = None,
        timezone: str | None = None,
        catch_up: bool = True,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
    ) -> _Decorator:
        """Register a task that runs on a schedule: ``@mq.periodic("*/10 * * * *")``
        or ``@mq.periodic(every=timedelta(seconds=30))``.

        Exactly one job per tick is queued across every process that shares the
        store (with a memory store: across the app's processes on the host, one
        of which holds the schedule through a lock in the instance folder); see
        :doc:`/periodic`. The function is called with no arguments; it is also a
        normal task (call it, or ``.delay()`` it). Other options are those of
        :meth:`task`.

        :param cron: a cron expression (five fields, or a shortcut such as
            ``"@daily"``; needs the ``cron`` extra: see "Installing" in the quickstart).
        :param every: an interval (a timedelta or seconds); ticks lie on the
            grid of its multiples since the Unix epoch.
        :param timezone: the IANA time zone of a cron expression (default
            ``MEMQUEUE_TIMEZONE``, itself ``"UTC"`` by default).
        :param catch_up: when the schedule comes back after every process was
            down over a tick, run once for the latest missed tick (never more);
            False waits for the next tick.
        :raises ScheduleError: an invalid cron expression or interval, an
            unknown time zone, cron without the extra, or a function that needs
            arguments (the message names the task); also a bare ``@mq.periodic``
            without parentheses, which has no schedule to run on.

        .. versionadded:: 1.1
        """
        if callable(cron):  # @mq.periodic on a function: no schedule, and the name would be rebound
            raise ScheduleError(
                f"@mq.periodic needs a schedule, in parentheses: @mq.periodic('*/10 * * * *') or"
                f" @mq.periodic(every=timedelta(seconds=30)); {default_name(cron)} was not registered"
                " (for a task that runs only when called, use @mq.task)"
            )

        from .schedule import make_periodic  # imported by the apps that have periodic tasks only

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            if isinstance(fn, Task):
                fn = fn.func
            task_name = name or default_name(fn)
            spec = make_periodic(task_name, cron, every, timezone, catch_up)
            _check_no_arguments(fn, task_name)
            return self._register_task(
                fn, task_name, named=name is not None, retries=retries, retry_delay=retry_delay,
                retry_backoff=retry_backoff, queue=queue, priority=priority, periodic=spec,
            )

        return register  # type: ignore[return-value]  # register keeps the signature: Task(fn)

    def _register_task(self, fn: Callable[..., Any], task_name: str, *, named: bool, **options: Any) -> Task[..., Any]:
        """Make and register the Task of ``@mq.task`` and ``@mq.periodic``; warn about a
        ``__main__`` task (unless ``named``) where a store other processes share reads it by name."""
        task: Task[..., Any] = Task(fn, task_name, mq=self, **options)
        self.registry.add_task(task)
        shared = any(q.storage.capabilities.shared for q in self._queues)
        if not named and task.name.startswith("__main__.") and shared:
            _warn_main_module([task.name])
        return task

    @overload
    def handler(self, topic: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def handler(
        self,
        topic: str | None = None,
        /,
        *,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        queue: str = "default",
        priority: int = 0,
        amqp_queue: str | None = None,
    ) -> _Decorator: ...

    def handler(self, topic: str | Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register the function that receives messages (``POST /produce``, :meth:`produce`).

        ``@mq.handler`` takes messages without a topic; ``@mq.handler("orders")``
        those of one topic. Options are those of :meth:`task` (``retries``,
        ``queue``, ``priority``...), and ``amqp_queue``: with
        ``MEMQUEUE_AMQP_URL``, the RabbitMQ queue this handler consumes (and
        ``produce`` publishes to), instead of the configured prefix and the
        topic (see :doc:`amqp`).

        :raises TypeError: the function cannot take one argument (the message),
            or the topic was given as a keyword.
        """
        if callable(topic):
            return self.handler(None)(topic)
        if "topic" in options:
            raise TypeError(f"a handler's topic comes first, not as a keyword: @mq.handler({options['topic']!r})")
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise TypeError(f"a handler's topic must be a non-empty string or None, not {topic!r}")
        unknown = set(options) - {"retries", "retry_delay", "retry_backoff", "queue", "priority", "amqp_queue"}
        if unknown:
            raise TypeError(f"unknown handler option(s): {', '.join(sorted(unknown))}")
        amqp_queue = options.pop("amqp_queue", None)
        if amqp_queue is not None:
            from .amqp import check_queue_name

            check_queue_name(amqp_queue, "amqp_queue")

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            task: Task[..., Any] = Task(fn, message_task_name(topic), topic=topic, mq=self, **options)
            try:  # else every message would fail in the consumer
                task.check_call((None,), None)
            except TypeError:
                raise TypeError(
                    f"a message handler is called with one argument, the message; {default_name(fn)} cannot"
                    " take one (def on_order(message): ...)"
                ) from None
            task.amqp_queue = amqp_queue
            self.registry.add_handler(task)
            return task

        return register

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
        ctx = _cv_app.get(None)  # the hot path, inlined; _queue() explains any failure
        queue = ctx.app.extensions.get(EXTENSION_KEY) if ctx is not None else None
        if queue is None or queue.mq is not self:
            queue = self._queue()
        try:
            task = self._known[func]  # registry.resolve(), its common case inlined
        except (KeyError, TypeError):
            task = self.registry.resolve(func)
        return queue.enqueue(task, args, kwargs)

    def options(
        self, *, queue: str | None = None, priority: int | None = None, unique_key: str | None = None,
        session: Any = None, on_commit: Any = None,
    ) -> Options:
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
        return Options(self, queue=queue, priority=priority, unique_key=unique_key, session=session,
                       on_commit=on_commit)

    def submit(
        self,
        func: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        *,
        eta: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        session: Any = None,
        on_commit: Any = None,
    ) -> Job[Any]:
        """Queue a call with every option spelled out (what :class:`Options` calls).

        ``eta`` is a Unix time; ``queue``/``priority`` None mean the task's own;
        ``unique_key`` None means none; ``session``/``on_commit`` see :meth:`options`.
        """
        state = self._queue()
        task = self.registry.resolve(func)
        if session is not None:
            return state.enqueue_in_session(task, args, kwargs, eta, queue, priority, unique_key, session)
        if on_commit is not None:
            return state.enqueue_on_commit(task, args, kwargs, eta, queue, priority, on_commit)
        return state.enqueue(task, args, kwargs, eta, queue, priority, unique_key)

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
        return self._queue().enqueue(self.registry.resolve(func), args, kwargs, eta=eta_in(delay))

    @overload
    def enqueue_at(self, when: _dt.datetime, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...

    @overload
    def enqueue_at(self, when: _dt.datetime, func: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...

    def enqueue_at(self, when: _dt.datetime, func: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue ``func(*args, **kwargs)`` to run at ``when``, a timezone-aware datetime.

        A time in the past runs as soon as the consumer can.
        """
        return self._queue().enqueue(self.registry.resolve(func), args, kwargs, eta=eta_at(when))

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
        task = self.registry.handler(topic)
        if queue.amqp is not None and not queue.config.eager:
            return queue.amqp.publish(task, message)
        return queue.enqueue(task, (message,), None)

    # -- the queue ---------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        """The job with that id in the current app's queue, if it is still known."""
        return self._queue().get_job(job_id)

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
        if _cv_app.get(None) is not None:
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
    ctx = _cv_app.get(None)
    if ctx is None:
        raise RuntimeError(
            "Working outside of application context: enqueue() uses the current app's queue."
            " Call it from a view or a job, or inside 'with app.app_context():'."
        )
    queue = ctx.app.extensions.get(EXTENSION_KEY)
    if queue is None:
        raise RuntimeError(
            f"The current Flask app {ctx.app.name!r} has no MemQueue. Did you forget 'mq.init_app(app)'?"
        )
    app_queue: AppQueue = queue
    return app_queue.enqueue(app_queue.registry.resolve(func), args, kwargs)


def _warn_main_module(names: list[str]) -> None:
    """Tasks of a script run as ``__main__`` cannot be found by name in another process."""
    warnings.warn(
        f"task(s) {', '.join(sorted(names))} were defined in a script run as __main__ and this app"
        " has a store other processes share (MEMQUEUE_STORAGE): another process (flask memqueue worker, a restarted"
        " app) reads jobs by task name and cannot import '__main__.*'. Move the tasks into an"
        " importable module, or give each a name (@mq.task(name='resize')) that the worker's"
        " imports register too.",
        MainModuleTaskWarning,
        stacklevel=3,
    )


def _check_no_arguments(func: Callable[..., Any], name: str) -> None:
    """A periodic task is called with no arguments: refuse a function that needs some."""
    import inspect

    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let it fail at run time
        return
    required = [
        p.name for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ScheduleError(
            f"periodic task {name!r}: its schedule calls it with no arguments, but {', '.join(required)}"
            " has no default; give it a default, or read what it needs inside the function"
        )


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
