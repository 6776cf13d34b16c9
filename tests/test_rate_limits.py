"""Rate limits hold across every worker sharing the Redis, and a throttled message
waits in Redis while other tasks flow (real workers, a real redis-server)."""

from __future__ import annotations

import pytest

from asyncq import Celery
from asyncq.exceptions import ConfigurationError
from asyncq.task import rate_per_second
from tests.conftest import read_record


@pytest.mark.parametrize(("rate", "per_second"), [
    ("10/s", 10.0), ("100/m", 100 / 60), ("1000/h", 1000 / 3600), ("5", 5.0), (2, 2.0),
    ("0", 0.0),
])
def test_celerys_rate_forms(rate, per_second):
    assert rate_per_second(rate) == pytest.approx(per_second)


def test_a_malformed_rate_limit_is_refused_when_the_task_or_the_app_is_made():
    app = Celery("bad")
    with pytest.raises(ConfigurationError, match="'10/d'"):
        app.task(name="t.bad", rate_limit="10/d")(lambda: None)
    with pytest.raises(ConfigurationError, match="'10/min'"):
        Celery("bad", task_default_rate_limit="10/min")
    with pytest.raises(ConfigurationError, match="not a finite"):
        rate_per_second(float("nan"))


def test_the_app_default_and_the_switch_that_turns_limits_off():
    app = Celery("defaults", task_default_rate_limit="4/s")
    unlimited_here = app.task(name="t.x")(lambda: None)
    own = app.task(name="t.y", rate_limit="1/s")(lambda: None)
    assert (unlimited_here.rate_interval(), own.rate_interval()) == (0.25, 1.0)
    app.conf.worker_disable_rate_limits = True
    assert own.rate_interval() is None


def test_a_rate_limit_holds_across_two_workers_while_other_tasks_drain(
        redis_url, client, start_worker):
    from tests import rateapp

    rateapp.app.reset_connection()
    # Given two workers with two children each
    workers = [start_worker(app="tests.rateapp", concurrency=2) for _ in range(2)]
    # When 200 messages of a task limited to 20/s are queued, and 200 of a free task
    limited = [rateapp.limited.delay(i) for i in range(200)]
    free = [rateapp.free.delay(i) for i in range(200)]
    # Then every one runs, once, with its own result
    assert [r.get(timeout=30) for r in free] == list(range(200))
    assert [r.get(timeout=30) for r in limited] == list(range(200))
    for result in limited:
        assert sum(w.count(rf"Task rates\.limited\[{result.id}\] received")
                   for w in workers) == 1
    # and the limited task started at 20 a second across both workers (within 10%)
    starts = sorted(float(read_record(client, r.id)["started_at"]) for r in limited)
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    print(f"rate-limited task: {rate:.2f} tasks/s across both workers (limit 20/s)")
    assert 18 <= rate <= 22, f"{rate:.2f} tasks/s"
    # while the free task drained at full speed beside it
    free_done = max(float(read_record(client, r.id)["finished_at"]) for r in free)
    assert free_done - starts[0] < 5, "the free task waited for the limited one"
    # and both workers ran the limited task (the limit is shared, not per worker)
    assert all(w.count(r"Task rates\.limited\[") > 0 for w in workers)
