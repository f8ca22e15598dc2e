"""The one attach/poll/drain loop (kdbg.trace.loop) with a fake tracer: no kernel."""

from __future__ import annotations

import pytest

from kdbg.errors import BadInput
from kdbg.trace import loop


class Fake(loop.Loop):
    """Counts turns; ``done`` after ``stop_after`` steps; records each hook called."""

    def __init__(self, stop_after: int | None = None, fail_attach: bool = False) -> None:
        self.stop_after, self.fail_attach = stop_after, fail_attach
        self.calls: list[str] = []
        self.steps = 0

    def attach(self) -> None:
        self.calls.append("attach")
        if self.fail_attach:
            raise BadInput("cannot attach")

    def step(self) -> None:
        self.steps += 1

    def done(self) -> bool:
        return self.stop_after is not None and self.steps >= self.stop_after

    def settle(self) -> None:
        self.calls.append("settle")

    def drain(self) -> None:
        self.calls.append("drain")

    def close(self) -> None:
        self.calls.append("close")


def test_the_tracer_s_own_count_ends_it_then_drain_and_close() -> None:
    fake = Fake(stop_after=5)
    end = loop.run(fake, cmd=None, duration=None)
    assert fake.steps == 5
    assert fake.calls == ["attach", "drain", "close"]
    assert end == loop.LoopEnd(cmd_status=None, interrupted=False)


def test_duration_ends_it() -> None:
    fake = Fake()
    end = loop.run(fake, cmd=None, duration=0.05)
    assert fake.steps >= 1 and fake.calls == ["attach", "drain", "close"]
    assert not end.interrupted


def test_the_workload_s_exit_settles_and_gives_its_status() -> None:
    fake = Fake()
    end = loop.run(fake, cmd="exit 7", duration=30)
    assert fake.calls == ["attach", "settle", "drain", "close"]
    assert end.cmd_status == 7


def test_a_failed_attach_still_drains_and_closes() -> None:
    fake = Fake(fail_attach=True)
    with pytest.raises(BadInput):
        loop.run(fake, cmd=None, duration=None)
    assert fake.calls == ["attach", "drain", "close"]


@pytest.mark.parametrize("count, duration, pages, message", [
    (0, None, 256, "--count must be positive"),
    (None, -1.0, 256, "--duration must be positive"),
    (None, None, 3, "--buffer-pages must be a power of two"),
])
def test_limits_are_checked_before_anything_loads(count: int | None, duration: float | None,
                                                  pages: int, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        loop.check_limits(count, duration)
        loop.check_pages(pages)
