"""The test suite's shared harness, imported as ``support.<module>`` (``tests/`` is on ``sys.path``).

Nothing here is imported by the package; nothing here imports ``conftest``.
``tests/conftest.py`` only loads :mod:`support.fixtures` as a plugin.

In the test process:

- :mod:`support.fixtures`: the pytest plugin: ``mq``, ``make_app``, ``app``,
  ``queue``, ``gate``, ``make_env``, the server fixtures
  (``redis_server``, ``rabbitmq``) and the autouse ``leak_detector``.
- :mod:`support.waiting`: ``TIMEOUT``, :func:`~support.waiting.wait_until`
  (the one poll-with-a-deadline), :class:`~support.waiting.Gate`.
- :mod:`support.threads`: the consumer and scheduler threads alive now.
- :mod:`support.factory`: :func:`~support.factory.build_app` (what a user's
  app factory does), :func:`~support.factory.new_job`.
- :mod:`support.backends`: ``STORAGE_BACKENDS``, the stores the contract
  (``flask_memqueue.testing``, run by ``test_storage_contract.py``) runs over.
- :mod:`support.markers`: the markers ``processes``, ``servers``, ``browser``,
  ``slow`` and the check that a test starting a process or a server carries its marker.
- :mod:`support.contention`: :func:`~support.contention.switch_often`.
- :mod:`support.forks`: :func:`~support.forks.in_child` (a body run in a forked child).
- :mod:`support.journals`: :func:`~support.journals.make_journal`, :func:`~support.journals.damage`.

Real processes and servers:

- :mod:`support.net`: ``HOST``, :func:`~support.net.free_port`, :func:`~support.net.http`.
- :mod:`support.processes`: start a process in its own group and stop the
  group by pid; :func:`~support.processes.flask_run`, :func:`~support.processes.gunicorn`.
- :mod:`support.harness`: :class:`~support.harness.Env`, the one process
  harness (an app of ``tests/apps/`` copied to a temporary directory, its log,
  the processes a test started), and :class:`~support.harness.Hold`.
- :mod:`support.base_app`: what every app of ``tests/apps/`` shares (it runs in
  those processes, so it imports Flask and the package only, never pytest).
- :mod:`support.servers`: real redis-server, rabbitmq-server and PostgreSQL (with
  PgBouncer), each started once per session on a free port and stopped by pid.
"""
