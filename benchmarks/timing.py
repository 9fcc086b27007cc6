r"""Wall-clock helpers shared by the small benchmark scripts."""
import statistics
import time
from typing import Callable, List


def step_times(step: Callable[[], object], reps: int,
               warmup: int = 1) -> List[float]:
    r"""Seconds of :obj:`reps` calls of :obj:`step`, after :obj:`warmup`
    untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def median_ms(step: Callable[[], object], reps: int = 5,
              warmup: int = 1) -> float:
    r"""Median milliseconds of :func:`step_times`."""
    return statistics.median(step_times(step, reps, warmup)) * 1e3
