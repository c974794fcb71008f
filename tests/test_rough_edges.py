"""The rough edges a new user hit (issues 15 and 25): each behaviour that changed, kept changed."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.harness import Env
from support.journals import damage, make_journal
from support.processes import bin_path
from support.servers.redis import RedisServer

from flask_memqueue import ConfigurationError, JournalError, MainModuleTaskWarning, MemQueue, QueueFull

TIMEOUT = 10.0


def test_threads_jobs_done_counts_jobs_and_attempts_counts_runs(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app()
    calls: list[int] = []

    @mq.task(retries=2, retry_delay=0)
    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")

    with app.app_context():
        for _ in range(3):
            mq.enqueue(len, "abc")
        flaky.delay()
        assert mq.join(TIMEOUT)
    consumer = app.test_client().get("/memqueue/threads").get_json()["consumer"]
    assert consumer["jobs_done"] == 4  # 4 jobs finished, not the 6 attempts they took
    assert consumer["attempts"] == 6


def test_eager_mode_logs_that_a_retry_runs_now(
    make_app: Callable[..., Flask], mq: MemQueue, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MEMQUEUE_EAGER=True)

    @mq.task(retries=2, retry_delay=5)
    def fails() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.WARNING, "flask_memqueue"), app.app_context():
        job = fails.delay()
    assert job.status == "failed" and job.attempts == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all("retrying now (eager mode)" in m for m in retries), retries
    assert not any("retrying in" in m for m in retries)


def test_the_non_eager_retry_log_still_says_when(
    make_app: Callable[..., Flask], mq: MemQueue, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False)

    @mq.task(retries=1, retry_delay=5)
    def fails() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.WARNING, "flask_memqueue"), app.app_context():
        fails.delay()
        assert mq.run_once()
    assert any("retrying in 5 s" in r.getMessage() for r in caplog.records)


def test_a_journal_that_is_a_folder_says_so(tmp_path: Path) -> None:
    app = Flask("folder")
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL=str(tmp_path))
    with pytest.raises(JournalError, match=r"MEMQUEUE_JOURNAL '.*' is a folder .*it must name the journal file,"
                       r" e.g. '.*memqueue\.db'"):
        MemQueue(app)


def test_a_relative_journal_folder_in_the_instance_folder_says_so(tmp_path: Path) -> None:
    app = Flask("folder", instance_path=str(tmp_path / "instance"))
    (tmp_path / "instance" / "jobs").mkdir(parents=True)
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL="jobs")
    with pytest.raises(JournalError,
                       match=r"MEMQUEUE_JOURNAL '.*/instance/jobs' is a folder .*e\.g\. '.*/jobs/memqueue\.db'"):
        MemQueue(app)


@pytest.mark.parametrize(
    ("kwargs", "sent"),
    [
        ({"data": {"message": "hi"}}, "a form (application/x-www-form-urlencoded)"),
        ({"data": "message=hi", "content_type": "text/plain"}, "text/plain"),
    ],
)
def test_produce_tells_a_form_post_to_send_json(
    make_app: Callable[..., Flask], mq: MemQueue, kwargs: dict[str, Any], sent: str
) -> None:
    app = make_app()
    mq.handler(lambda message: None)
    response = app.test_client().post("/memqueue/produce", **kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == 400
    assert body["error"].startswith("the body is not valid JSON: ")
    assert f"This request sent {sent}: send the message as JSON with 'Content-Type: application/json'" in body["error"]


def test_produce_still_takes_json_sent_as_a_form_content_type(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False)  # what `curl -d '{"message": "hi"}'` sends
    mq.handler(lambda message: None)
    response = app.test_client().post("/memqueue/produce", data='{"message": "hi"}',
                                      content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202


@pytest.mark.parametrize("journal", [False, True], ids=["memory", "journal"])
@pytest.mark.parametrize(
    ("topic", "expected"),
    [(None, "the message for the default handler was not queued"),
     ("orders", "the message for topic 'orders' was not queued")],
)
def test_queue_full_names_the_message(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, journal: bool, topic: str | None, expected: str
) -> None:
    config: dict[str, Any] = {"MEMQUEUE_CONSUMER": False, "MEMQUEUE_MAXSIZE": 1}
    if journal:
        config["MEMQUEUE_JOURNAL"] = str(tmp_path / "journal.db")
    app = make_app(**config)
    mq.handler(topic)(lambda message: None)
    with app.app_context():
        mq.produce("first", topic)
        with pytest.raises(QueueFull) as info:
            mq.produce("second", topic)
    assert str(info.value) == f"the queue holds 1 waiting jobs (MEMQUEUE_MAXSIZE); {expected}"
    with app.app_context():
        @mq.task(name="named")
        def named() -> None: ...

        with pytest.raises(QueueFull, match="the job of task 'named' was not queued"):
            named.delay()


SCRIPT = """
import sys
from flask import Flask
from flask_memqueue import MemQueue

mq = MemQueue()

@mq.task
def resize(path):
    return path

@mq.task(name="thumbnails.make")
def named(path):
    return path

app = Flask(__name__)
app.config.update(TESTING=True, MEMQUEUE_CONSUMER=False, MEMQUEUE_JOURNAL=sys.argv[1])
mq.init_app(app)

@mq.task
def late(path):
    return path
"""


@pytest.mark.processes
def test_tasks_of_a_script_run_as_main_warn_when_a_journal_needs_their_names(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([sys.executable, "-W", "default", str(script), str(tmp_path / "j.db")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if MainModuleTaskWarning.__name__ in line]
    assert len(warned) == 2, result.stderr  # at init_app (resize), and when late is registered after it
    assert "task(s) __main__.resize were defined in a script run as __main__" in warned[0]
    assert "__main__.late" in warned[1]
    assert "thumbnails.make" not in result.stderr  # a named task is found by its name


@pytest.mark.processes
def test_tasks_of_a_script_without_journal_do_not_warn(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("MEMQUEUE_JOURNAL=sys.argv[1]", "MEMQUEUE_MAXSIZE=5"))
    result = subprocess.run([sys.executable, "-W", "error", str(script), "unused"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# == issue 25 ======================================================================================
ROOT = Path(__file__).resolve().parent.parent
EXTRAS = {"redis": "redis", "amqp": "pika", "cron": "cronsim", "metrics": "prometheus_client", "postgres": "psycopg"}


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())  # type: ignore[no-any-return]


# -- installing: what the errors and the docs say works --------------------------------------------
def _missing_extra_errors(
    make_app: Callable[..., Flask], mq: MemQueue, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The error each extra's absence gives, as a user meets it."""
    from flask_memqueue import ConfigurationError, ScheduleError

    errors: dict[str, str] = {}
    for module in EXTRAS.values():
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ConfigurationError) as redis:
        make_app("needs_redis", MEMQUEUE_STORAGE="redis://127.0.0.1:1/0")
    errors["redis"] = str(redis.value)
    with pytest.raises(ConfigurationError) as postgres:
        make_app("needs_postgres", MEMQUEUE_STORAGE="postgresql://127.0.0.1:1/db")
    errors["postgres"] = str(postgres.value)
    with pytest.raises(ConfigurationError) as amqp:
        make_app("needs_amqp", MEMQUEUE_AMQP_URL="amqp://127.0.0.1:1/%2F")
    errors["amqp"] = str(amqp.value)
    with pytest.raises(ScheduleError) as cron:
        mq.periodic("@daily", name="needs_cron")(lambda: None)
    errors["cron"] = str(cron.value)
    metrics = make_app("needs_metrics", MEMQUEUE_METRICS=True).test_client().get("/memqueue/metrics")
    assert metrics.status_code == 501
    errors["metrics"] = metrics.get_json()["error"]
    return errors


def test_a_missing_extra_names_the_install_command_of_this_copy(
    make_app: Callable[..., Flask], mq: MemQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_memqueue.extras import install_hint

    errors = _missing_extra_errors(make_app, mq, monkeypatch)
    for extra, text in errors.items():
        hint = install_hint(extra)
        assert hint in text, (extra, text)
        assert hint.endswith(f'[{extra}]"') and not hint.lower().startswith('pip install "flask-memqueue['), hint
    # This checkout is installed editable by scripts/test.sh: the hint names it, with -e.
    source = Path(__file__).resolve().parent.parent
    assert install_hint("cron") == f'pip install -e "{source}[cron]"'


@pytest.mark.processes
def test_the_install_command_in_the_errors_is_one_pip_accepts(tmp_path: Path) -> None:
    """pip itself reads the command (dry run, this checkout's metadata built as a user's pip
    would): it finds Flask-MemQueue with the extra, which brings the extra's packages."""
    import json
    import shlex

    from flask_memqueue.extras import install_hint

    argv = shlex.split(install_hint("cron"))
    assert argv[:2] == ["pip", "install"]
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", "--report", str(report),
         *argv[2:]], capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (installed,) = json.loads(report.read_text())["install"]
    assert installed["metadata"]["name"] == "Flask-MemQueue"
    assert installed["requested_extras"] == ["cron"]
    requires = installed["metadata"]["requires_dist"]
    assert any(r.startswith("cronsim") and 'extra == "cron"' in r for r in requires), requires


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        ({"url": "https://github.com/o/flask-memqueue.git",
          "vcs_info": {"vcs": "git", "commit_id": "abc", "requested_revision": "v1.2"}},
         'pip install "Flask-MemQueue[redis] @ git+https://github.com/o/flask-memqueue.git@v1.2"'),
        ({"url": "https://example.com/flask_memqueue-1.0.0-py3-none-any.whl", "archive_info": {}},
         'pip install "Flask-MemQueue[redis] @ https://example.com/flask_memqueue-1.0.0-py3-none-any.whl"'),
        (None, 'pip install "Flask-MemQueue[redis]"'),  # from an index: the name works there
    ],
    ids=["git", "archive", "index"],
)
def test_the_install_command_follows_where_the_copy_came_from(
    monkeypatch: pytest.MonkeyPatch, direct_url: dict[str, Any] | None, expected: str
) -> None:
    import json
    from importlib import metadata

    from flask_memqueue import extras

    class Installed:
        def read_text(self, name: str) -> str | None:
            return json.dumps(direct_url) if direct_url is not None else None

        def locate_file(self, name: str) -> Path:
            return Path(extras.__file__).resolve().parent.parent / name  # this very copy

    monkeypatch.setattr(metadata, "distribution", lambda name: Installed())
    extras._install_command.cache_clear()
    try:
        assert extras.install_hint("redis") == expected
    finally:
        extras._install_command.cache_clear()


def test_no_page_or_message_names_the_unpublished_package() -> None:
    """``pip install "flask-memqueue[...]"`` fails in a fresh venv: nothing may tell users to run it."""
    import re

    wrong = re.compile(r"""pip install ["']?flask-memqueue\[[^\]]*\](?!\s*@)""", re.I)  # "... @ git+URL" works
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.*"), *(ROOT / "flask_memqueue").rglob("*.py"),
             *(ROOT / "flask_memqueue" / "templates").rglob("*.html")]
    found = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files if f.is_file()
             for m in wrong.finditer(f.read_text(errors="replace"))]
    assert found == []
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    assert "## Installing" in quickstart
    for extra in [*EXTRAS, "docs"]:
        assert f"| `{extra}` |" in quickstart, extra
    assert "docs/quickstart.md#installing" in (ROOT / "README.md").read_text()


# -- decorators used without their parentheses, or with a wrong first argument ---------------------
def test_a_bare_periodic_is_refused_showing_both_forms(mq: MemQueue) -> None:
    from flask_memqueue import ScheduleError

    def purge() -> None: ...

    with pytest.raises(ScheduleError) as info:
        mq.periodic(purge)  # what @mq.periodic without parentheses does
    text = str(info.value)
    assert "@mq.periodic('*/10 * * * *')" in text and "@mq.periodic(every=timedelta(seconds=30))" in text
    assert "purge was not registered" in text
    assert mq.registry.periodic == {} and mq.registry.tasks == {}


def test_a_task_name_given_positionally_is_refused(mq: MemQueue) -> None:
    with pytest.raises(TypeError, match=r"@mq.task\(name='resize'\)"):
        mq.task("resize")  # type: ignore[call-overload]
    assert mq.registry.tasks == {}


@pytest.mark.parametrize("register", ["task", "periodic"])
def test_a_task_name_that_is_not_text_or_is_blank_is_refused(mq: MemQueue, register: str) -> None:
    """``name=5`` became the task "5" and ``name=""`` fell back to module.function, silently."""
    decorate = mq.task if register == "task" else (lambda **kw: mq.periodic(every=60, **kw))
    with pytest.raises(TypeError, match="a task's name is a string, like name='resize', not 5"):
        decorate(name=5)(lambda: None)
    for blank in ("", "   "):
        with pytest.raises(ConfigurationError, match="a task's name is not blank"):
            decorate(name=blank)(lambda: None)
    assert mq.registry.tasks == {} and mq.registry.periodic == {}


def test_a_handler_that_cannot_take_the_message_is_refused_at_registration(mq: MemQueue) -> None:
    with pytest.raises(TypeError, match="a message handler is called with one argument, the message"):
        mq.handler("orders")(lambda: None)
    with pytest.raises(TypeError, match="a message handler is called with one argument"):
        mq.handler(lambda a, b: None)
    with pytest.raises(TypeError, match=r"a handler's topic comes first, not as a keyword: @mq.handler\('orders'\)"):
        mq.handler(topic="orders")  # type: ignore[call-overload]
    assert mq.registry.handlers == {}
    mq.handler("fine")(lambda message, extra=None: None)
    mq.handler(lambda *args: None)


# -- cron shortcuts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shortcut", "fields"),
    [("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"), ("@weekly", "0 0 * * 0"),
     ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *")],
)
def test_cron_shortcuts_tick_as_their_fields(mq: MemQueue, shortcut: str, fields: str) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from flask_memqueue.schedule import Cron

    task = mq.periodic(shortcut, name=f"s{shortcut[1:]}", timezone="Europe/Paris")(lambda: None)
    spec = task.periodic
    assert spec is not None and isinstance(spec.schedule, Cron)
    assert spec.schedule.describe() == f"{shortcut} ({fields})"
    paris = ZoneInfo("Europe/Paris")
    t = dt.datetime(2026, 3, 28, 22, 30, tzinfo=paris).timestamp()  # the night clocks go forward
    plain = Cron(fields)
    for _ in range(3):
        tick = spec.schedule.next_after(t, paris)
        assert tick == plain.next_after(t, paris) and tick is not None
        t = tick
    assert dt.datetime.fromtimestamp(t, paris).minute == 0


def test_reboot_and_unknown_shortcuts_are_refused_saying_why(mq: MemQueue) -> None:
    from flask_memqueue import ScheduleError

    with pytest.raises(ScheduleError, match=r"'@reboot' is not a schedule here.*in your app factory"):
        mq.periodic("@reboot", name="boot")(lambda: None)
    with pytest.raises(ScheduleError) as info:
        mq.periodic("@fortnightly", name="fortnight")(lambda: None)
    assert "unknown cron shortcut '@fortnightly'" in str(info.value)
    assert "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly" in str(info.value)
    assert mq.registry.periodic == {}


def test_a_shortcut_shows_in_periodic_listings(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    mq.periodic("@hourly", name="hourly")(lambda: None)
    app = make_app(MEMQUEUE_CONSUMER=False)
    listed = app.test_client().get("/memqueue/periodic").get_json()
    assert [t["schedule"] for t in listed["tasks"]] == ["@hourly (0 * * * *)"]


# -- the command line: a failing store ends in one line, never a traceback ------------------------
CLI_COMMANDS = [["jobs"], ["periodic"], ["retry", "x-1"], ["purge", "--finished"]]


def _cli_app(make_app: Callable[..., Flask], mq: MemQueue, url: str) -> Flask:
    mq.periodic(every=3600, name="cli.hourly")(lambda: None)  # so `periodic` reads the store's ticks
    return make_app("cliapp", MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False)


def _one_clean_error(result: Any) -> str:
    """The output of a command that failed cleanly: exit 1 (ClickException), one line ``Error: ...``."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (result.exception, result.output)
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.mark.servers
@pytest.mark.parametrize("args", CLI_COMMANDS, ids=lambda a: a[0])
def test_cli_commands_say_redis_is_down_in_one_line(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, args: list[str]
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    url = server.url()
    server.stop()  # a real server, stopped: its port refuses connections
    app = _cli_app(make_app, mq, url)
    line = _one_clean_error(app.test_cli_runner().invoke(args=["memqueue", *args]))
    assert "(MEMQUEUE_STORAGE)" in line and "the server is unreachable" in line, line


@pytest.mark.servers
@pytest.mark.parametrize("args", CLI_COMMANDS, ids=lambda a: a[0])
def test_cli_commands_say_the_password_is_wrong_in_one_line(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, args: list[str]
) -> None:
    with RedisServer(tmp_path / "redis", password="right-one").start() as server:
        app = _cli_app(make_app, mq, f"redis://:wrong-one@127.0.0.1:{server.port}/0")
        line = _one_clean_error(app.test_cli_runner().invoke(args=["memqueue", *args]))
    assert "refused the credentials (wrong password or user name)" in line, line
    assert "wrong-one" not in line and "redis://:***@127.0.0.1" in line


@pytest.mark.processes
@pytest.mark.parametrize("args", [["jobs"], ["periodic"], ["worker"]], ids=lambda a: a[0])
def test_cli_commands_say_the_journal_is_damaged_in_one_line(make_env: Callable[..., Env], args: list[str]) -> None:
    """A damaged journal is refused when the app loads (init_app): the command, a flask.commands
    plugin, is found all the same and says why in one line (a real `flask` process)."""
    env = make_env("faults_app", target="faults_app:create_app()")
    journal = env.journal
    make_journal(journal, jobs=50)
    damage(journal, 2)
    proc = env.run([str(bin_path("flask")), "--app", env.target, "memqueue", *args], 60, FA_JOURNAL=str(journal))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"Error: journal '{journal}' (MEMQUEUE_JOURNAL): the file is damaged"), line


def test_the_cli_help_names_the_stores_and_jobs_has_a_header(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    @mq.task(name="cli.add")
    def add(a: int, b: int) -> int:
        return a + b

    app = make_app("cliapp", MEMQUEUE_JOURNAL=str(tmp_path / "j.db"), MEMQUEUE_CONSUMER=False)
    runner = app.test_cli_runner()
    help_text = " ".join(runner.invoke(args=["memqueue", "--help"]).output.split())
    assert "journal" in help_text and "Redis" in help_text and "flask-memqueue journal" not in help_text
    assert runner.invoke(args=["memqueue", "jobs"]).output == "no jobs\n"
    with app.app_context():
        job = add.delay(1, 2)
    out = runner.invoke(args=["memqueue", "jobs"]).output.splitlines()
    assert out == ["id\tstatus\ttask\tattempts\terror", f"{job.id}\tqueued\tcli.add\t0\t"]
    assert runner.invoke(args=["memqueue", "jobs", "--status", "failed"]).output == "no failed jobs\n"
    mq.periodic(every=60, name="cli.minutely")(lambda: None)
    periodic = runner.invoke(args=["memqueue", "periodic"]).output.splitlines()
    assert periodic[1].startswith("task\tschedule\t")  # the same kind of header row, after the schedule line


def test_cli_jobs_takes_the_filter_options_of_cancel_retry_and_delete(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    """``flask memqueue jobs --task/--q/--queue/--since/--until/--status a,b`` lists what
    ``cancel`` with the same options would act on; a bad value is a usage error (exit 2)."""

    @mq.task(name="cli.send")
    def send(to: str) -> None: ...

    @mq.task(name="cli.report", queue="reports")
    def report(n: int) -> None: ...

    app = make_app("clifilter", MEMQUEUE_JOURNAL=str(tmp_path / "j.db"), MEMQUEUE_CONSUMER=False,
                   MEMQUEUE_QUEUES={"default": 1, "reports": 1})
    runner = app.test_cli_runner()
    with app.app_context():
        ada, bob = send.delay("ada@example.com"), send.delay("bob@example.com")
        rep = report.delay(7)
        assert ada.cancel()

    def listed(*args: str) -> list[str]:
        result = runner.invoke(args=["memqueue", "jobs", *args])
        assert result.exit_code == 0, result.output
        return [line.split("\t")[0] for line in result.output.splitlines()[1:]]

    assert listed() == [rep.id, bob.id, ada.id]
    assert listed("--task", "cli.send") == [bob.id, ada.id]
    assert listed("--q", "bob@") == [bob.id]
    assert listed("--queue", "reports") == [rep.id]
    assert listed("--status", "queued,cancelled", "--task", "cli.send") == [bob.id, ada.id]
    assert listed("--status", "cancelled") == [ada.id]
    assert listed("--status", " cancelled ") == [ada.id]  # as the filter reads it (it raised ValueError)
    assert listed("--since", "2001-01-01T00:00:00+00:00", "--until", str(2**31), "--limit", "2") == [rep.id, bob.id]
    assert runner.invoke(args=["memqueue", "jobs", "--task", "nope"]).output == "no jobs match --task 'nope'\n"
    for bad in (["--status", "bogus"], ["--since", "yesterday"], ["--since", "2030-01-01", "--until", "2020-01-01"]):
        result = runner.invoke(args=["memqueue", "jobs", *bad])
        assert result.exit_code == 2 and "Error: filter" in result.output, result.output


def test_the_worker_banner_reads_well_and_warns_once_about_a_queue_nobody_names(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_memqueue import cli

    @mq.task(name="mail.send", queue="emails")
    def send() -> None: ...

    ran: list[dict[str, int]] = []
    monkeypatch.setattr(cli, "run_worker", lambda queue, plan: ran.append(plan))  # the banner, not the pools
    app = make_app("cliapp", MEMQUEUE_JOURNAL=str(tmp_path / "j.db"), MEMQUEUE_CONSUMER=False,
                   MEMQUEUE_QUEUES={"default": 1, "reports": 0})
    result = app.test_cli_runner().invoke(args=["memqueue", "worker", "--queues", "emails,nosuch,reports,default",
                                                "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert ran == [{"emails": 2, "nosuch": 2, "reports": 2, "default": 2}]
    lines = result.stderr.splitlines()
    assert lines[0].endswith("queues: emails (2 threads), nosuch (2 threads), reports (2 threads), default (2 threads)")
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "names the queue 'nosuch'" in warnings[0], lines  # a task names emails
    assert "MEMQUEUE_QUEUES" in warnings[0] and "@mq.task(queue=...)" in warnings[0]
    ran.clear()
    result = app.test_cli_runner().invoke(args=["memqueue", "worker", "--queues", "default"])
    assert "queues: default (1 thread)" in result.stderr and "warning" not in result.stderr
    result = app.test_cli_runner().invoke(args=["memqueue", "worker"])  # MEMQUEUE_QUEUES's own: no warning
    assert ran[-1] == {"default": 1} and "warning" not in result.stderr


# -- a call that does not fit the task's signature is refused at enqueue ---------------------------
ENQUEUE_FORMS: dict[str, Callable[[MemQueue, Any, tuple[Any, ...], dict[str, Any]], Any]] = {
    "delay": lambda mq, task, a, kw: task.delay(*a, **kw),
    "enqueue": lambda mq, task, a, kw: mq.enqueue(task, *a, **kw),
    "enqueue by name": lambda mq, task, a, kw: mq.enqueue(task.name, *a, **kw),
    "module enqueue": lambda mq, task, a, kw: _module_enqueue(task, *a, **kw),
    "enqueue_in": lambda mq, task, a, kw: mq.enqueue_in(60, task, *a, **kw),
    "enqueue_at": lambda mq, task, a, kw: mq.enqueue_at(_in_an_hour(), task, *a, **kw),
    "options().delay": lambda mq, task, a, kw: task.options(priority=5).delay(*a, **kw),
    "options().enqueue_in": lambda mq, task, a, kw: task.options(queue="default").enqueue_in(60, *a, **kw),
    "mq.options().enqueue": lambda mq, task, a, kw: mq.options(unique_key="k").enqueue(task, *a, **kw),
}


def _module_enqueue(task: Any, *args: Any, **kwargs: Any) -> Any:
    from flask_memqueue import enqueue

    return enqueue(task, *args, **kwargs)


def _in_an_hour() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


@pytest.mark.parametrize("journal", [False, True], ids=["memory", "journal"])
@pytest.mark.parametrize("form", list(ENQUEUE_FORMS))
@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [((), {}, "missing a required argument: 'to'"),
     (("a@example.com",), {"subjet": "hi"}, "got an unexpected keyword argument 'subjet'"),
     (("a@example.com", "hi", "body", "extra"), {}, "too many positional arguments"),
     (("a@example.com",), {"to": "b@example.com"}, "multiple values for argument 'to'")],
    ids=["missing", "unexpected keyword", "too many", "twice"],
)
def test_a_call_that_does_not_fit_is_refused_at_enqueue_and_nothing_is_queued(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, journal: bool, form: str,
    args: tuple[Any, ...], kwargs: dict[str, Any], why: str,
) -> None:
    @mq.task(name="mail.send")
    def send(to: str, subject: str = "", body: str = "") -> str:
        return to

    config: dict[str, Any] = {"MEMQUEUE_CONSUMER": False}
    if journal:
        config["MEMQUEUE_JOURNAL"] = str(tmp_path / "j.db")
    app = make_app(**config)
    with app.app_context():
        with pytest.raises(TypeError) as info:
            ENQUEUE_FORMS[form](mq, send, args, kwargs)
        text = str(info.value)
        assert text.startswith("task 'mail.send' cannot be called with these arguments: " + why), text
        assert text.endswith("It takes send(to, subject='', body=''); nothing was queued"), text
        assert app.extensions["memqueue"].storage.depth() == 0
        assert ENQUEUE_FORMS[form](mq, send, ("a@example.com",), {"subject": "hi"}).status.value in (
            "queued", "scheduled")


def test_eager_mode_checks_the_call_too(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    calls: list[int] = []

    @mq.task
    def count(n: int) -> None:
        calls.append(n)

    app = make_app(MEMQUEUE_EAGER=True)
    with app.app_context(), pytest.raises(TypeError, match="missing a required argument: 'n'"):
        count.delay()  # type: ignore[call-arg]
    assert calls == []


def test_captured_jobs_check_the_call_too(app: Flask, mq: MemQueue, memqueue_captured: Any) -> None:
    @mq.task
    def count(n: int) -> None: ...

    with app.app_context():
        with pytest.raises(TypeError, match="got an unexpected keyword argument 'm'"):
            count.delay(1, m=2)  # type: ignore[call-arg]
        count.delay(n=1)
    assert [entry.kwargs for entry in memqueue_captured] == [{"n": 1}]


def test_produce_checks_nothing_more_than_the_handler_registration(
    make_app: Callable[..., Flask], mq: MemQueue
) -> None:
    mq.handler("orders")(lambda order: None)
    app = make_app(MEMQUEUE_CONSUMER=False)
    response = app.test_client().post("/memqueue/produce", json={"topic": "orders", "message": {"id": 1}})
    assert response.status_code == 202


class _Resizer:
    def __call__(self, path: str, *, width: int) -> str:
        return path

    def method(self, path: str, /, width: int = 1) -> str:
        return path


@pytest.mark.parametrize(
    ("func", "good", "bad"),
    [
        (lambda *args, **kwargs: None, [((), {}), ((1, 2), {"x": 1})], []),
        (lambda a, /, b, *, c: None, [((1, 2), {"c": 3}), ((1,), {"b": 2, "c": 3})],
         [((), {"a": 1, "b": 2, "c": 3}), ((1, 2), {}), ((1, 2, 3), {})]),
        (lambda a, **kw: None, [((1,), {"z": 2}), ((), {"a": 1, "b": 2})], [((1,), {"a": 2}), ((), {"b": 1})]),
        (lambda a, /, **kw: None, [((1,), {"a": 2})], [((), {"a": 1})]),
        (_Resizer(), [(("p",), {"width": 1})], [(("p", 1), {}), (("p",), {})]),
        (_Resizer().method, [(("p",), {}), (("p", 2), {})], [((), {"path": "p"}), (("p", 1, 2), {})]),
        (dict, [((), {}), (({"a": 1},), {"b": 2})], []),  # a builtin: whatever its signature allows
        (len, [(("ab",), {})], [((), {}), (("a", "b"), {})]),
    ],
    ids=["varargs", "posonly-kwonly", "varkw", "posonly-varkw", "callable-object", "bound-method", "dict", "len"],
)
def test_the_check_takes_every_call_the_function_takes_and_no_other(
    func: Callable[..., Any], good: list[tuple[tuple[Any, ...], dict[str, Any]]],
    bad: list[tuple[tuple[Any, ...], dict[str, Any]]],
) -> None:
    from flask_memqueue import Task

    task: Task[..., Any] = Task(func, "t")
    for args, kwargs in good * 2:  # twice: the second time from what the first one compiled
        task.check_call(args, kwargs)
    for args, kwargs in bad * 2:
        with pytest.raises(TypeError, match="task 't' cannot be called with these arguments"):
            task.check_call(args, kwargs)


def test_a_decorator_that_changes_the_signature_is_judged_by_its_wrapper(mq: MemQueue) -> None:
    """The function's own signature decides, not the one functools.wraps copies from the wrapped
    function: a decorator that injects an argument must not make valid calls fail."""
    import functools

    def with_session(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return f("session", *args, **kwargs)

        return wrapper

    @mq.task
    @with_session
    def save(session: str, item: int) -> None: ...

    save.check_call((1,), {})  # save.delay(1) is right: the wrapper gives the session


def test_the_precompiled_check_agrees_with_signature_bind() -> None:
    """Random signatures and random calls: check_call refuses exactly the calls Python refuses."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from flask_memqueue import Task

    names = ["a", "b", "c", "d"]
    kinds = st.sampled_from(["posonly", "pos", "kwonly"])

    @st.composite
    def signatures(draw: Any) -> str:
        params = draw(st.lists(st.tuples(kinds, st.booleans()), max_size=4))
        params.sort(key=lambda p: ["posonly", "pos", "kwonly"].index(p[0]))
        parts: list[str] = []
        seen_default = False
        for i, (kind, default) in enumerate(params):
            if kind != "kwonly":
                default = default or seen_default  # after a default, positional ones need one
                seen_default = default
            parts.append(names[i] + ("=0" if default else ""))
            if kind == "posonly" and (i + 1 == len(params) or params[i + 1][0] != "posonly"):
                parts.append("/")
        varargs, varkw = draw(st.booleans()), draw(st.booleans())
        first_kwonly = next((i for i, p in enumerate(parts) if p[0] in names and
                             params[names.index(p[0])][0] == "kwonly"), None)
        if varargs or first_kwonly is not None:
            marker = "*args" if varargs else "*"
            parts.insert(first_kwonly if first_kwonly is not None else len(parts), marker)
        if varkw:
            parts.append("**kw")
        return ", ".join(parts)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(signatures(), st.integers(0, 5), st.lists(st.sampled_from([*names, "z"]), unique=True, max_size=3))
    def agree(params: str, n: int, keywords: list[str]) -> None:
        namespace: dict[str, Any] = {}
        exec(f"def f({params}): pass", namespace)
        func = namespace["f"]
        args, kwargs = tuple(range(n)), {k: 0 for k in keywords}
        try:  # the oracle is the call itself (its body is `pass`): inspect's bind() on 3.11
            func(*args, **kwargs)  # refuses f(a=0) for `def f(a=0, /, **kw)`, which Python runs (PEP 570)
            binds = True
        except TypeError:
            binds = False
        task: Task[..., Any] = Task(func, "t")
        for _ in range(2):  # the first call compiles, the second uses what it compiled (and remembered)
            try:
                if kwargs or not task.min_args <= len(args) <= task.max_args:  # as the enqueue path does
                    task.check_call(args, kwargs)
                checked = True
            except TypeError:
                checked = False
            assert checked == binds, (params, args, kwargs)

    agree()


# -- the docs' tooling, and what the test command installs -----------------------------------------
def test_the_docs_extra_brings_what_the_docs_build_needs() -> None:
    import re

    import yaml

    extras = _pyproject()["project"]["optional-dependencies"]
    docs = {re.split(r"[<>=!~ \[]", r)[0].lower() for r in extras["docs"]}
    assert docs == {"sphinx", "furo", "myst-parser"}
    test = {re.split(r"[<>=!~ \[]", r)[0].lower() for r in extras["test"]}
    assert docs <= test  # tests/test_docs.py builds them
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert 'html_theme = "furo"' in conf and '"myst_parser"' in conf
    rtd = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert rtd["version"] == 2
    assert (ROOT / rtd["sphinx"]["configuration"]).is_file() and rtd["sphinx"]["fail_on_warning"] is True
    assert rtd["python"]["install"] == [{"method": "pip", "path": ".", "extra_requirements": ["docs"]}]
    assert rtd["build"]["os"] and rtd["build"]["tools"]["python"]
    readme = (ROOT / "README.md").read_text()
    shown = readme[readme.index("## Documentation"):]
    assert 'pip install -e ".[docs]"' in shown and "sphinx-build" in shown and ".readthedocs.yaml" in shown


def test_the_readme_and_the_quickstart_say_what_the_test_command_installs() -> None:
    import re

    script = (ROOT / "scripts" / "test.sh").read_text()
    (extras,) = re.findall(r'pip install -q -e "\.\[([a-z,]+)\]"', script)
    packages = sorted(set(re.findall(r"apt-get install -y -qq (\S+)", script)))
    assert packages  # chromium, rabbitmq-server, redis-server today
    said = []
    for page in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        text = page.read_text()
        comment = text[text.index("# 2. run the tests"):text.index("bash scripts/test.sh")]
        said.append(comment)
        for extra in extras.split(","):
            assert f"{extra} extras" in comment or f" {extra} and" in comment or f"{extra}," in comment, (
                page.name, extra, comment)
        for package in packages:
            assert package in comment, (page.name, package, comment)
    assert said[0] == said[1]  # word for word


# -- /stats in a process that only enqueues --------------------------------------------------------
def test_stats_of_an_enqueue_only_process_show_no_threads_and_who_consumes(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    @mq.task(name="mail.send", queue="emails")
    def send(to: str) -> str:
        return to

    journal = str(tmp_path / "j.db")
    web = make_app("shop", MEMQUEUE_JOURNAL=journal, MEMQUEUE_CONSUMER=False,
                   MEMQUEUE_QUEUES={"default": 1, "emails": 4})
    client = web.test_client()
    with web.app_context():
        job = send.delay("a@example.com")
    stats = client.get("/memqueue/stats").get_json()
    for name in ("default", "emails"):
        assert stats["queues"][name]["threads"] == 0 and stats["queues"][name]["alive"] == 0, stats["queues"]
        assert stats["queues"][name]["consumed_by"] == "nobody"
    assert stats["queues"]["emails"]["queued"] == 1
    page = client.get("/memqueue/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert re.search(r'data-queue="emails">.*?data-q="threads">0 / 0<.*?data-q="consumed_by" class="alert">nobody<',
                     page, re.S)

    # Another process on the journal consumes "emails" (an app of the same name, as a worker is).
    worker = make_app("shop", MEMQUEUE_JOURNAL=journal, MEMQUEUE_QUEUES={"default": 0, "emails": 2})
    assert worker.extensions["memqueue"].ensure_consumer()  # starts its threads and declares its queues
    with worker.app_context():
        assert mq.get_job(job.id).wait(TIMEOUT) == "a@example.com"  # type: ignore[union-attr]
    stats = client.get("/memqueue/stats").get_json()
    assert stats["queues"]["emails"]["threads"] == 0
    assert stats["queues"]["emails"]["consumed_by"] == "other processes"
    assert stats["queues"]["default"]["consumed_by"] == "nobody"
    page = client.get("/memqueue/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert re.search(r'data-queue="emails">.*?data-q="consumed_by">other processes<', page, re.S)
    mine = worker.test_client().get("/memqueue/stats").get_json()["queues"]["emails"]
    assert (mine["threads"], mine["alive"], mine["consumed_by"]) == (2, 2, "this process")


# -- the command group as a flask.commands plugin --------------------------------------------------
@pytest.mark.processes
def test_the_cli_plugin_imports_nothing_else_of_the_package_and_answers_any_app(tmp_path: Path) -> None:
    """Flask loads plugins for every `flask` command of every app in the environment: loading
    this one must not import the queue machinery, and an app without MemQueue gets one line."""
    code = "import sys, flask_memqueue.cli; print(sorted(m for m in sys.modules if m.startswith('flask_memqueue')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert loaded.stdout.strip() == "['flask_memqueue', 'flask_memqueue.cli']", loaded.stdout + loaded.stderr
    (tmp_path / "plain.py").write_text("from flask import Flask\napp = Flask('plain')\n")
    proc = subprocess.run([str(bin_path("flask")), "--app", "plain", "memqueue", "jobs"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr == "Error: the app 'plain' has no MemQueue; call mq.init_app(app)\n"
