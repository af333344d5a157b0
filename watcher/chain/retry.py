"""The one retry policy of the chain layer, kept as data (principle 8).

:class:`RetryPolicy` says how often and how long; :func:`retrying` applies it
with tenacity. Only :class:`~watcher.chain.errors.RetryableRpcError` is
retried; every other exception — permanent RPC errors, programming errors,
``asyncio.CancelledError`` — propagates on the first occurrence. After the last
attempt the last retryable error itself is raised (not a tenacity wrapper).

Delays (seconds; time, not money, so floats are fine): attempt ``k`` (1-based)
that failed waits ``min(max_delay, base_delay × multiplier**(k-1))`` plus a
uniform random ``[0, jitter]``. With the defaults (5 attempts, 0.2 s, ×2, cap
5 s): 0.2, 0.4, 0.8, 1.6 s between the five attempts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from watcher.chain.errors import RetryableRpcError

__all__ = ["DEFAULT_POLICY", "RetryPolicy", "call_with_retry", "retrying"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0:
            raise ValueError("delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """From a settings table; unknown keys are an error, missing keys default."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown retry policy keys: {sorted(unknown)}")
        return replace(cls(), **dict(data))

    def backoff(self, failures: int) -> float:
        """Delay without jitter after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        delay: float = self.base_delay * self.multiplier ** (failures - 1)
        return min(self.max_delay, delay)


DEFAULT_POLICY = RetryPolicy()


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    before_sleep: Callable[[RetryCallState], Any] | None = None,
) -> AsyncRetrying:
    """A tenacity ``AsyncRetrying`` for ``policy`` (``sleep`` injectable for tests)."""
    wait = wait_exponential(
        multiplier=policy.base_delay, exp_base=policy.multiplier, max=policy.max_delay
    )
    if policy.jitter > 0:
        wait = wait + wait_random(0, policy.jitter)  # type: ignore[assignment]
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if before_sleep is not None:
        kwargs["before_sleep"] = before_sleep
    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception_type(RetryableRpcError),
        reraise=True,
        **kwargs,
    )


async def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[P, Awaitable[T]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``await fn(*args, **kwargs)`` under ``policy``."""
    result: T = await retrying(policy)(fn, *args, **kwargs)
    return result
