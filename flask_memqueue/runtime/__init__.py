"""One app's queue in one process, as a few rooms with one job each.

:class:`~flask_memqueue.state.AppQueue` (``app.extensions["memqueue"]``) is
the front; it builds these rooms, again in a forked child, and hands each
what it needs:

- :mod:`.store`: the store handle (open, re-open after fork, close) and the process's identity;
- :mod:`.pools`: a pool of consumer threads per named queue (start, replace a dead one, stop);
- :mod:`.scheduling`: the scheduler thread's place (start, restart, stop, release);
- :mod:`.supervisor`: what should run here, started lazily and restarted when it died;
- :mod:`.producer`: jobs in (the enqueue path, eager mode, periodic ticks);
- :mod:`.jobs`: what a job asks of its queue (``wait``, ``cancel``), and the job-level verbs;
- :mod:`.transport`: how ``produce()`` sends a message (the store, or RabbitMQ);
- :mod:`.shutdown`: draining and stopping at shutdown, and before a signal kills the process;
- :mod:`.stats`: what ``/stats``, ``/threads``, ``/health`` and the dashboard show.
"""
