"""Celery 5 code runs on asyncq with its imports renamed.

Each test writes everyday Celery code as Celery's documentation shows it, with
``from celery ...`` / ``import celery`` in its import lines, renames those lines
mechanically (``as_asyncq``), and runs it against real workers on the suite's
private Redis. The only other change is test plumbing: the broker URL.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from asyncq.exceptions import ConfigurationError
from tests.conftest import Process, asyncq_command


def as_asyncq(source: str) -> str:
    """The one change a Celery user makes: ``celery`` becomes ``asyncq`` in import lines."""
    return re.sub(r"^(\s*)(from|import)\s+celery\b", r"\1\2 asyncq", textwrap.dedent(source),
                  flags=re.M)


class Project:
    """A folder of Celery modules (renamed), importable here and by a worker run in it."""

    def __init__(self, root: Path, broker_url: str):
        self.root = root
        self.broker_url = broker_url
        self.modules: list[str] = []

    def write(self, path: str, celery_source: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(as_asyncq(celery_source).replace("BROKER_URL", repr(self.broker_url)))
        self.modules.append(path.removesuffix(".py").removesuffix("/__init__").replace("/", "."))

    def import_module(self, name: str):
        return importlib.import_module(name)

    def worker(self, app: str, *args: str) -> Process:
        worker = Process(asyncq_command("-A", app, "worker", "--loglevel=INFO", *args),
                         cwd=self.root, env={"ASYNCQ_BROKER_URL": self.broker_url})
        worker.wait_for(r" ready\.$", timeout=20)
        return worker


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Iterator[Project]:
    made = Project(tmp_path, redis_url)
    sys.path.insert(0, str(tmp_path))
    yield made
    sys.path.remove(str(tmp_path))
    for name in list(sys.modules):
        if any(name == module or name.startswith(module + ".") for module in made.modules):
            del sys.modules[name]


@pytest.fixture
def run_worker(project: Project) -> Iterator:
    started: list[Process] = []

    def start(app: str, *args: str) -> Process:
        worker = project.worker(app, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


# -- loading an app as Celery does ---------------------------------------------------
def test_celerys_next_steps_layout_runs_as_asyncq_minus_A_proj_worker(project, run_worker):
    # Given Celery's examples/next-steps project: the app in proj/celery.py, tasks in
    # proj/tasks.py named by include=[...]
    project.write("proj/__init__.py", "")
    project.write("proj/celery.py", """
        from celery import Celery

        app = Celery('proj', broker=BROKER_URL, backend=BROKER_URL,
                     include=['proj.tasks'])

        # Optional configuration, see the application user guide.
        app.conf.update(
            result_expires=3600,
        )

        if __name__ == '__main__':
            app.start()
        """)
    project.write("proj/tasks.py", """
        from .celery import app


        @app.task
        def add(x, y):
            return x + y


        @app.task
        def mul(x, y):
            return x * y


        @app.task
        def xsum(numbers):
            return sum(numbers)
        """)
    # When it is started as `celery -A proj worker` is, with the program renamed
    worker = run_worker("proj")
    # Then the worker found the app and imported the included tasks
    assert "proj.tasks.add" in worker.output and "proj.tasks.xsum" in worker.output
    tasks = project.import_module("proj.tasks")
    assert tasks.add.delay(4, 4).get(timeout=10) == 8
    assert tasks.mul.delay(3, 5).get(timeout=10) == 15
    assert tasks.xsum.delay([1, 2, 3]).get(timeout=10) == 6


def test_config_from_object_takes_a_class_a_module_name_and_a_namespace(project):
    from asyncq import Celery

    # Given settings as a class, as a module, and Django-style under CELERY_
    class Config:
        broker_url = project.broker_url
        task_acks_late = True
        timezone = "Europe/London"
        enable_utc = True
        broker_connection_retry_on_startup = True
        broker_transport_options = {"visibility_timeout": 3600}

    project.write("celeryconfig.py", """
        task_serializer = 'json'
        result_expires = 600
        task_track_started = True
        worker_prefetch_multiplier = 1
        """)
    project.write("djangosettings.py", """
        from datetime import timedelta

        DEBUG = True
        CELERY_TASK_ACKS_LATE = True
        CELERY_RESULT_EXPIRES = timedelta(hours=2)
        CELERY_BROKER_TRANSPORT_OPTIONS = {'visibility_timeout': 3600}
        """)
    # When each is loaded
    app = Celery("proj")
    app.config_from_object(Config)
    assert (app.conf.task_acks_late, app.conf.timezone) == (True, "Europe/London")
    # then Celery settings asyncq has no use for are kept, and read back as set
    assert app.conf.broker_transport_options == {"visibility_timeout": 3600}
    assert "broker_transport_options" in app.conf.not_used

    app.config_from_object("celeryconfig")
    assert (app.conf.result_expires, app.conf.worker_prefetch_multiplier) == (600, 1)

    django = Celery("site")
    django.config_from_object("djangosettings", namespace="CELERY")
    assert (django.conf.task_acks_late, django.conf.result_expires) == (True, 7200)
    assert "debug" not in django.conf.not_used  # not a setting: left alone

    # and a misspelt setting is still an error that names the right one
    class Typo:
        task_acks_lat = True

    with pytest.raises(ConfigurationError, match="did you mean 'task_acks_late'"):
        Celery("typo").config_from_object(Typo)
    with pytest.raises(ConfigurationError, match="unknown setting 'no_such_thing'"):
        Celery("typo", no_such_thing=1)
    # and time limits take fractions of a second, as in Celery
    assert Celery("limits", task_time_limit=2.5, task_soft_time_limit=1.5).conf \
        .task_time_limit == 2.5


def test_the_worker_lists_the_celery_settings_it_does_not_use(project, run_worker):
    project.write("settingsapp.py", """
        from celery import Celery

        app = Celery('settingsapp', broker=BROKER_URL)
        app.conf.broker_transport_options = {'visibility_timeout': 3600}
        app.conf.worker_hijack_root_logger = False
        app.conf.timezone = 'UTC'
        """)
    worker = run_worker("settingsapp")
    line = worker.wait_for(r"not used by asyncq: (.*) \(see docs/from-celery\.md\)")
    assert line.group(1) == "broker_transport_options, worker_hijack_root_logger"


def test_shared_task_and_autodiscover_tasks(project, run_worker):
    # Given a reusable app's tasks written with @shared_task, found by autodiscovery
    project.write("billing/__init__.py", "")
    project.write("billing/tasks.py", """
        from celery import shared_task


        @shared_task
        def invoice(amount):
            return f"invoice for {amount}"
        """)
    project.write("shop.py", """
        from celery import Celery

        app = Celery('shop', broker=BROKER_URL)
        app.autodiscover_tasks(['billing', 'nothing_here'])
        """)
    # When a worker of the project's app starts
    worker = run_worker("shop")
    assert "billing.tasks.invoice" in worker.output
    # Then the shared task is sent through the current app and runs
    project.import_module("shop")
    invoice = project.import_module("billing.tasks").invoice
    assert invoice.delay(12).get(timeout=10) == "invoice for 12"
    assert invoice(3) == "invoice for 3"  # called directly, as a function


# -- eager mode and task classes ------------------------------------------------------
def test_eager_mode_runs_tasks_in_the_caller_as_celery_users_test_them(project):
    project.write("eagerapp.py", """
        from celery import Celery
        from celery.result import EagerResult

        app = Celery('eagerapp', broker=BROKER_URL)
        app.conf.task_always_eager = True
        app.conf.task_eager_propagates = True


        @app.task(bind=True)
        def add(self, x, y):
            return {'sum': x + y, 'eager': self.request.is_eager}


        @app.task
        def fails():
            raise ValueError('no')
        """)
    module = project.import_module("eagerapp")
    result = module.add.delay(2, 3)
    assert isinstance(result, module.EagerResult)
    assert (result.get(), result.state, result.successful()) == \
        ({"sum": 5, "eager": True}, "SUCCESS", True)
    with pytest.raises(ValueError, match="no"):
        module.fails.delay()
    # apply() does the same without the setting; with throw=False the error is the result
    outcome = module.fails.apply(throw=False)
    assert outcome.failed() and isinstance(outcome.result, ValueError)
    assert "ValueError: no" in outcome.traceback


def test_task_classes_and_their_hooks(project):
    project.write("classes.py", """
        from celery import Celery, Task

        app = Celery('classes', broker=BROKER_URL)
        seen = []


        class Recorded(app.Task):
            def before_start(self, task_id, args, kwargs):
                seen.append(('before_start', args))

            def on_success(self, retval, task_id, args, kwargs):
                seen.append(('on_success', retval))

            def on_failure(self, exc, task_id, args, kwargs, einfo):
                seen.append(('on_failure', repr(exc)))

            def after_return(self, status, retval, task_id, args, kwargs, einfo):
                seen.append(('after_return', status))


        @app.task(base=Recorded)
        def double(x):
            return 2 * x


        @app.task(base=Recorded, autoretry_for=(KeyError,), retry_kwargs={'max_retries': 2})
        def missing():
            raise KeyError('gone')


        class Multiply(Task):
            name = 'classes.Multiply'

            def run(self, x, y):
                return x * y


        multiply = app.register_task(Multiply())
        """)
    module = project.import_module("classes")
    assert module.double.apply((21,)).get() == 42
    assert module.seen == [("before_start", [21]), ("on_success", 42),
                           ("after_return", "SUCCESS")]
    module.seen.clear()
    failed = module.missing.apply()
    # two retries (retry_kwargs), then the failure: before_start runs once per try
    assert [name for name, _ in module.seen] == ["before_start"] * 3 + \
        ["on_failure", "after_return"]
    assert failed.state == "FAILURE"
    assert module.app.tasks["classes.Multiply"] is module.multiply
    assert module.multiply.apply((6, 7)).get() == 42
    # and calls that run() cannot take are refused when sent (Celery's typing=True)
    with pytest.raises(TypeError, match="missing a required argument"):
        module.double.delay()


def test_signals_are_sent_around_an_eager_run(project):
    project.write("signalled.py", """
        from celery import Celery
        from celery.signals import task_prerun, task_postrun, task_success, task_failure

        app = Celery('signalled', broker=BROKER_URL)
        heard = []


        @task_prerun.connect
        def before(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
            heard.append(('prerun', task.name, args))


        @task_postrun.connect
        def after(sender=None, task_id=None, retval=None, state=None, **extra):
            heard.append(('postrun', state, retval))


        @task_success.connect(sender='no.such.task')
        def never(**extra):
            heard.append('wrong sender')


        @task_failure.connect
        def broken_receiver(**extra):
            raise RuntimeError('a receiver that raises is logged, never fatal')


        @app.task(name='signalled.add')
        def add(x, y):
            return x + y


        @app.task(name='signalled.fails')
        def fails():
            raise ValueError('boom')
        """)
    module = project.import_module("signalled")
    assert module.add.apply((1, 2)).get() == 3
    assert module.heard == [("prerun", "signalled.add", [1, 2]), ("postrun", "SUCCESS", 3)]
    assert module.fails.apply().state == "FAILURE"


# -- JSON as Celery's JSON ------------------------------------------------------------
def test_datetime_decimal_and_uuid_results_come_back_with_their_types(project, run_worker):
    project.write("typed.py", """
        import datetime
        import decimal
        import uuid

        from celery import Celery

        app = Celery('typed', broker=BROKER_URL)


        @app.task
        def values():
            return {'when': datetime.datetime(2026, 1, 2, 3, 4, 5,
                                              tzinfo=datetime.timezone.utc),
                    'day': datetime.date(2026, 1, 2), 'at': datetime.time(3, 4),
                    'price': decimal.Decimal('10.10'),
                    'id': uuid.UUID('12345678-1234-5678-1234-567812345678')}
        """)
    run_worker("typed")
    got = project.import_module("typed").values.delay().get(timeout=10)
    assert got == {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                   "day": dt.date(2026, 1, 2), "at": dt.time(3, 4),
                   "price": Decimal("10.10"),
                   "id": uuid.UUID("12345678-1234-5678-1234-567812345678")}


# -- the testing kit -------------------------------------------------------------------
def test_a_celery_test_suite_runs_on_the_pytest_plugin(tmp_path, redis_url):
    # Given a user's test suite written for celery.contrib.pytest, imports renamed
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(as_asyncq("""
        import pytest

        pytest_plugins = ("celery.contrib.pytest",)


        @pytest.fixture(scope="session")
        def celery_config():
            return {"task_acks_late": True}
        """).replace('"celery.contrib.pytest"', '"asyncq.contrib.pytest"'))
    (suite / "test_tasks.py").write_text(as_asyncq("""
        def test_create_task(celery_app, celery_worker):
            @celery_app.task
            def mul(x, y):
                return x * y

            celery_worker.reload()
            assert mul.delay(4, 4).get(timeout=10) == 16


        def test_config_is_used(celery_app):
            assert celery_app.conf.task_acks_late is True


        def test_session_worker(celery_session_app, celery_session_worker):
            @celery_session_app.task
            def hello():
                return "hi"

            celery_session_worker.reload()
            assert hello.delay().get(timeout=10) == "hi"
        """))
    # When pytest runs it
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(suite)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    # Then every test passes on a real worker
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout


# -- inspect, as `celery -A proj inspect ...` -------------------------------------------
def test_inspect_active_reserved_scheduled_registered_stats_and_ping(
        app, gate, start_worker, redis_url):
    import json

    from tests.conftest import run_asyncq, wait_for_progress_pid
    from tests.taskapp import add, block

    def inspect(*args: str):
        return run_asyncq("-A", "tests.taskapp", "inspect", *args, broker_url=redis_url)

    # Given no worker at all: Celery's answer and exit status 69
    nobody = inspect("ping")
    assert nobody.returncode == 69, nobody.stderr
    assert "No nodes replied within time constraint" in nobody.stderr

    # Given a worker running one task, and one task scheduled for later
    worker = start_worker(concurrency=1)
    running = block.delay(gate.key)
    wait_for_progress_pid(running)
    later = add.apply_async((1, 2), countdown=3600)
    name = re.search(r"worker (\S+)", worker.output).group(1)

    ping = inspect("ping")
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.splitlines()[:2] == [f"->  {name}: OK", "        pong"]
    assert ping.stdout.rstrip().endswith("1 node online.")

    active = json.loads(inspect("active", "--json").stdout)
    assert [(task["id"], task["name"], task["acknowledged"]) for task in active[name]] == \
        [(running.id, "tests.block", True)]
    text = inspect("active").stdout
    assert f"'id': '{running.id}'" in text and "'name': 'tests.block'" in text

    assert json.loads(inspect("reserved", "--json").stdout) == {name: []}
    assert "- empty -" in inspect("reserved").stdout

    [scheduled] = json.loads(inspect("scheduled", "--json").stdout)[name]
    assert (scheduled["request"]["id"], scheduled["request"]["args"]) == (later.id, [1, 2])

    registered = json.loads(inspect("registered", "--json").stdout)[name]
    assert "tests.add" in registered and "tests.block" in registered

    stats = json.loads(inspect("stats", "--json").stdout)[name]
    assert (stats["pid"], stats["pool"]["max-concurrency"]) == (worker.pid, 1)


# -- in the worker: hooks, signals, Reject and Ignore, typed arguments -------------------
WORKER_APP = """
    import datetime
    import decimal
    import uuid

    import redis
    from celery import Celery
    from celery.exceptions import Ignore, Reject
    from celery.signals import (after_task_publish, before_task_publish, task_failure,
                                task_postrun, task_prerun, task_success, worker_init,
                                worker_process_init, worker_ready, worker_shutdown)

    app = Celery('workerapp', broker=BROKER_URL)
    heard = redis.Redis.from_url(BROKER_URL)  # what the worker saw, for the test to read


    def say(*words):
        heard.rpush('heard', ' '.join(str(word) for word in words))


    @worker_init.connect
    def on_worker_init(sender=None, **kwargs):
        say('worker_init')


    @worker_process_init.connect
    def on_process_init(**kwargs):
        say('worker_process_init')


    @worker_ready.connect
    def on_ready(sender=None, **kwargs):
        say('worker_ready')


    @worker_shutdown.connect
    def on_shutdown(sender=None, **kwargs):
        say('worker_shutdown')


    @task_prerun.connect
    def on_prerun(sender=None, task_id=None, task=None, args=None, **kwargs):
        say('task_prerun', task.name, args)


    @task_postrun.connect
    def on_postrun(sender=None, task_id=None, task=None, retval=None, state=None, **kwargs):
        say('task_postrun', task.name, state)


    @task_success.connect
    def on_success(sender=None, result=None, **kwargs):
        say('task_success', sender.name, result)


    @task_failure.connect
    def on_failure(sender=None, exception=None, **kwargs):
        say('task_failure', sender.name, repr(exception))


    class Audited(app.Task):
        def on_success(self, retval, task_id, args, kwargs):
            say('hook on_success', self.name, retval)

        def on_failure(self, exc, task_id, args, kwargs, einfo):
            say('hook on_failure', self.name, type(exc).__name__, 'Traceback' in einfo)

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            say('hook after_return', self.name, status)


    @app.task(base=Audited, name='workerapp.add')
    def add(x, y):
        return x + y


    @app.task(base=Audited, name='workerapp.fails', throws=(KeyError,))
    def fails():
        raise KeyError('expected')


    @app.task(name='workerapp.kinds')
    def kinds(when, price, ident):
        return [type(when).__name__, type(price).__name__, type(ident).__name__,
                when + datetime.timedelta(days=1), price * 2, ident]


    @app.task(bind=True, name='workerapp.ignored')
    def ignored(self):
        self.update_state(state='HALFWAY', meta={'done': 1})
        raise Ignore()


    @app.task(name='workerapp.rejected')
    def rejected():
        raise Reject('bad input', requeue=False)


    @app.task(name='workerapp.flaky', autoretry_for=(ConnectionError,),
              dont_autoretry_for=(ConnectionRefusedError,),
              retry_kwargs={'max_retries': 1, 'countdown': 0})
    def flaky(refused):
        raise (ConnectionRefusedError if refused else ConnectionError)('down')


    published = []


    @before_task_publish.connect
    def on_publish(sender=None, routing_key=None, headers=None, **kwargs):
        published.append((sender, routing_key, headers['id']))
    """


@pytest.fixture
def workerapp(project, run_worker, client):
    project.write("workerapp.py", WORKER_APP)
    worker = run_worker("workerapp", "--concurrency=1")
    return project.import_module("workerapp"), worker


def heard(client) -> list[str]:
    return [line.decode() for line in client.lrange("heard", 0, -1)]


def test_worker_signals_and_task_hooks_are_sent_where_celery_sends_them(workerapp, client):
    module, worker = workerapp
    from tests.conftest import wait_until

    result = module.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    # the publish signal, in the caller
    assert module.published == [("workerapp.add", "celery", result.id)]
    # then, in the worker: hooks after the state is stored, then the signals
    wait_until(lambda: "task_postrun workerapp.add SUCCESS" in heard(client),
               "task_postrun for add")
    lines = heard(client)
    assert lines[:3] == ["worker_init", "worker_process_init", "worker_ready"] or \
        lines[:3] == ["worker_init", "worker_ready", "worker_process_init"]
    task_lines = [line for line in lines if not line.startswith("worker_")]
    assert task_lines == ["task_prerun workerapp.add [2, 3]", "hook on_success workerapp.add 5",
                          "hook after_return workerapp.add SUCCESS",
                          "task_success workerapp.add 5", "task_postrun workerapp.add SUCCESS"]

    client.delete("heard")
    failed = module.fails.delay()
    assert failed.get(timeout=10, propagate=False).__class__.__name__ == "KeyError"
    wait_until(lambda: any(line.startswith("task_postrun workerapp.fails") for line in
                           heard(client)), "task_postrun for fails")
    assert heard(client)[1:4] == ["hook on_failure workerapp.fails KeyError True",
                                  "hook after_return workerapp.fails FAILURE",
                                  "task_failure workerapp.fails KeyError('expected')"]
    # throws=(KeyError,): an expected error is logged at INFO, without alarm
    worker.wait_for(r"INFO/.*Task workerapp\.fails\[.*\] raised expected KeyError")

    worker.stop()
    assert "worker_shutdown" in heard(client)


def test_datetime_decimal_and_uuid_arguments_arrive_with_their_types(workerapp):
    module, _ = workerapp
    when = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    ident = uuid.uuid4()
    got = module.kinds.delay(when, Decimal("1.25"), ident).get(timeout=10)
    assert got == ["datetime", "Decimal", "UUID", when + dt.timedelta(days=1),
                   Decimal("2.50"), ident]


def test_ignore_stores_nothing_and_reject_keeps_a_dead_letter(workerapp, client):
    module, worker = workerapp
    from tests.conftest import DEAD_LETTERS, wait_until

    # Ignore: the message is acknowledged; the state stays what the task set itself
    ignored = module.ignored.delay()
    worker.wait_for(rf"Task workerapp\.ignored\[{ignored.id}\] ignored")
    assert ignored.state == "HALFWAY"
    wait_until(lambda: not any(client.llen(key) for key in client.scan_iter("*inflight*")),
               "the ignored task's message acknowledged")

    # Reject(requeue=False): REJECTED, and the message kept as a dead letter
    rejected = module.rejected.delay()
    with pytest.raises(Exception, match="bad input") as error:
        rejected.get(timeout=10)
    assert type(error.value).__name__ == "Reject"
    assert rejected.state == "REJECTED"
    [letter] = client.lrange(DEAD_LETTERS, 0, -1)
    assert rejected.id.encode() in letter


def test_retry_kwargs_and_dont_autoretry_for_in_the_worker(workerapp):
    module, worker = workerapp
    # ConnectionError retries once (retry_kwargs max_retries=1), then fails
    retried = module.flaky.delay(False)
    assert isinstance(retried.get(timeout=15, propagate=False), ConnectionError)
    assert worker.count(rf"Task workerapp\.flaky\[{retried.id}\] retry") == 1
    # ConnectionRefusedError is excluded: no retry at all
    refused = module.flaky.delay(True)
    assert isinstance(refused.get(timeout=10, propagate=False), ConnectionRefusedError)
    assert worker.count(rf"Task workerapp\.flaky\[{refused.id}\] retry") == 0


def test_python_proj_py_worker_runs_through_app_start(project):
    # Given Celery's single-module layout, started with its own __main__ block
    project.write("standalone.py", """
        from celery import Celery

        app = Celery('standalone', broker=BROKER_URL)


        @app.task
        def hello(name):
            return f'hello {name}'


        if __name__ == '__main__':
            app.start()
        """)
    # When it is run as `python standalone.py worker`
    worker = Process([sys.executable, "standalone.py", "worker", "--concurrency=1",
                      "--loglevel=INFO"], cwd=project.root,
                     env={"ASYNCQ_BROKER_URL": project.broker_url})
    try:
        worker.wait_for(r" ready\.$", timeout=20)
        # Then it is a worker of that app, and runs its tasks
        assert "standalone.hello" in worker.output
        hello = project.import_module("standalone").hello
        assert hello.delay("you").get(timeout=10) == "hello you"
    finally:
        worker.stop()


def test_canvases_run_eagerly_when_tasks_do(project):
    project.write("eagercanvas.py", """
        from celery import Celery, chain, chord, group

        app = Celery('eagercanvas', broker=BROKER_URL)
        app.conf.task_always_eager = True


        @app.task
        def add(x, y):
            return x + y


        @app.task
        def xsum(numbers):
            return sum(numbers)
        """)
    module = project.import_module("eagercanvas")
    from asyncq import chain, chord, group

    add, xsum = module.add, module.xsum
    assert chain(add.s(1, 2), add.s(10), add.s(100)).delay().get() == 113
    assert group(add.s(i, i) for i in range(4)).delay().get() == [0, 2, 4, 6]
    assert chord([add.s(i, i) for i in range(4)], xsum.s()).delay().get() == 12
    assert add.s(2, 2).delay().get() == 4


def test_a_naive_eta_is_read_in_the_apps_timezone(project):
    from asyncq import Celery

    # Given an app in New York's time zone, and an ETA written as a naive datetime
    app = Celery("tz", broker=project.broker_url, timezone="America/New_York")
    task = app.task(name="tz.noop")(lambda: None)
    summer = dt.date.today().year + 1  # within the 10 years an eta may reach
    naive = dt.datetime(summer, 7, 1, 9, 0)
    result = task.apply_async(eta=naive)
    # Then the message is due at 9:00 in New York (13:00 UTC in summer)
    due = app.broker.client.zscore(app.keys.scheduled("celery"),
                                   app.broker.client.zrange(app.keys.scheduled("celery"),
                                                            0, 0)[0])
    assert dt.datetime.fromtimestamp(due, dt.timezone.utc) == \
        dt.datetime(summer, 7, 1, 13, 0, tzinfo=dt.timezone.utc), result.id
    with pytest.raises(ConfigurationError, match="not a time zone name"):
        Celery("bad", timezone="Mars/Olympus")


def test_signature_by_name_and_result_sets(project, run_worker):
    project.write("sigapp.py", """
        from celery import Celery, signature
        from celery.result import GroupResult, ResultSet

        app = Celery('sigapp', broker=BROKER_URL)


        @app.task(name='sigapp.add')
        def add(x, y):
            return x + y
        """)
    run_worker("sigapp")
    module = project.import_module("sigapp")
    # a call by name, as from a process that does not have the task's code
    sig = module.signature("sigapp.add", args=(2, 2))
    assert sig.delay().get(timeout=10) == 4
    results = module.ResultSet([module.add.delay(i, i) for i in range(3)])
    assert results.join(timeout=10) == [0, 2, 4]
    assert results.completed_count() == 3 and results.successful()
    assert issubclass(module.GroupResult, module.ResultSet)
