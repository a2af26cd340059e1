"""A replica's shared health: backoff after failures, one prober, lag from known positions (no database)."""

from __future__ import annotations

import threading

from ponykit.binding._health import Health


def make() -> Health:
    return Health(max_lag=2.0, check_interval=1.0, retry_after=1.0, retry_cap=8.0)


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    health = make()
    waits = []
    for _ in range(6):
        health.failed(100.0)
        waits.append(health.retry_at - 100.0)
        health.probing = False
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert health.down


def test_one_thread_probes_a_returning_replica() -> None:
    health = make()
    health.failed(0.0)
    assert not health.claim(0.5)  # still backing off
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(health.claim(5.0))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(True) == 1  # no thundering herd
    health.succeeded()
    assert not health.down
    assert health.claim(5.0)


def test_failed_probe_backs_off_again() -> None:
    health = make()
    health.failed(0.0)
    assert health.claim(2.0)
    health.failed(2.0)
    assert not health.claim(3.0)
    assert health.claim(4.1)


def test_lag_is_measured_against_known_positions() -> None:
    health = make()
    health.mark(1000, 10.0)  # a commit of this process at t=10
    health.observed(replayed=500, received=1200, now=11.0)
    assert not health.lagging  # behind, but for 1 s only
    health.observed(replayed=900, received=1200, now=12.5)
    assert health.lagging  # position 1000 known for 2.5 s > max_lag
    health.observed(replayed=1200, received=1200, now=13.0)
    assert not health.lagging
    assert health.reached(1200) and not health.reached(1201)
    assert health.lag_seconds(13.0) == 0.0


def test_replay_position_never_goes_back() -> None:
    health = make()
    health.observed(replayed=700, received=None, now=1.0)
    health.observed(replayed=600, received=None, now=2.0)
    assert health.replayed == 700


def test_checks_are_claimed_once_per_interval() -> None:
    health = make()
    assert health.due(10.0)
    assert not health.due(10.0)  # another thread: the check is running
    health.checked(10.0)
    assert not health.due(10.5)
    assert health.due(11.1)


def test_a_lagging_replica_is_rechecked_by_one_thread_per_interval() -> None:
    health = make()
    health.mark(10, 0.0)
    health.observed(replayed=5, received=None, now=3.0)
    health.checked(3.0)
    assert health.lagging
    assert not health.claim(3.5)
    assert health.claim(4.1)
    assert not health.claim(4.1)


def test_a_replica_ten_seconds_behind_is_lagging_whatever_the_commit_rate() -> None:
    """Issue #21 review: more commits than the kept marks must not drop the oldest unreplayed one."""
    health = Health(max_lag=1.0, check_interval=1.0, retry_after=1.0, retry_cap=30.0)
    health.observed(1000, 1000, 0.0)  # caught up at t=0
    for i in range(1000):  # this process commits 100 times a second for 10 s
        health.mark(2000 + i, i * 0.01)
    health.observed(1000, 2999, 10.0)  # nothing replayed since t=0
    assert health.lag_seconds(10.0) >= 9.0
    assert health.lagging
    health.observed(2500, 2999, 10.0)  # half replayed: the lag is measured from a mark near 2500
    assert 4.0 <= health.lag_seconds(10.0) <= 6.0


def test_a_replica_lagging_at_a_slow_commit_rate_is_lagging() -> None:
    health = Health(max_lag=1.0, check_interval=1.0, retry_after=1.0, retry_cap=30.0)
    health.observed(1000, 1000, 0.0)
    for i in range(10):
        health.mark(2000 + i, float(i))
    health.observed(1000, 2009, 10.0)
    assert health.lagging


def test_the_age_of_the_last_replayed_commit_bounds_the_lag() -> None:
    """A process that committed nothing still sees the lag the replica reports about itself."""
    health = make()
    health.observed(1000, 2000, 5.0, replay_age=3.0)  # received WAL waits; last replayed commit 3 s old
    assert health.lagging
    assert health.lag_seconds(5.0) == 3.0
    health.observed(2000, 2000, 6.0, replay_age=None)  # caught up (an idle primary: no age counted)
    assert not health.lagging


def test_a_probe_without_an_answer_lets_the_next_thread_probe() -> None:
    health = make()
    health.failed(0.0)
    assert health.claim(2.0)
    assert not health.claim(2.0)  # claimed
    health.unclaim()  # that probe could not connect (the pool was full): no answer
    assert health.claim(2.0)
    assert health.down  # still down until a probe succeeds
