"""The worker's liveness rule: alive while polling and in the group, not when stuck."""

from __future__ import annotations

from consumer.metrics import Liveness


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_alive_while_polling_in_the_group() -> None:
    clock = FakeClock()
    liveness = Liveness(timeout_s=30, clock=clock)
    liveness.joined()
    for _ in range(10):
        clock.now += 20
        liveness.polled()
    assert liveness.problems() == []


def test_a_stalled_poll_loop_is_not_alive() -> None:
    clock = FakeClock()
    liveness = Liveness(timeout_s=30, clock=clock)
    liveness.joined()
    clock.now += 31
    assert liveness.problems() == ["no poll for 31 s"]


def test_out_of_the_group_too_long_is_not_alive() -> None:
    clock = FakeClock()
    liveness = Liveness(timeout_s=30, clock=clock)
    liveness.joined()
    liveness.left()
    clock.now += 10
    liveness.polled()
    assert liveness.problems() == [], "a rebalance shorter than the timeout is normal"
    clock.now += 25
    liveness.polled()
    assert liveness.problems() == ["not in the consumer group for 35 s"]


def test_never_joining_is_not_alive() -> None:
    clock = FakeClock()
    liveness = Liveness(timeout_s=30, clock=clock)
    clock.now += 40
    liveness.polled()
    assert liveness.problems() == ["not in the consumer group for 40 s"]


def test_a_stalled_companion_consumer_makes_the_worker_not_alive() -> None:
    clock = FakeClock()
    images, callbacks = Liveness(timeout_s=30, clock=clock), Liveness(timeout_s=30, clock=clock)
    images.watch("callbacks", callbacks)
    images.joined()
    callbacks.joined()
    clock.now += 31
    images.polled()
    assert images.problems() == ["callbacks: no poll for 31 s"]
    callbacks.polled()
    assert images.problems() == []
