"""Load mode: a steady stream of initiation calls for benchmarks.

Calls are generated lazily (a benchmark may ask for hundreds of thousands) and
deterministically for a given seed, so two benchmark runs offer the pipeline the same
traffic. Times are virtual seconds from the start of the load.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from infra.pbx_sim.scenario import InboundCall, LoadProfile


def synthetic_ani_pool(size: int = 1000, seed: int | None = None, prefix: str = "3706") -> list[str]:
    """Plausible mobile numbers for when the benchmark does not care who calls."""
    rng = random.Random(seed)
    return [f"{prefix}{rng.randrange(10**7):07d}" for _ in range(size)]


def iter_load_calls(profile: LoadProfile, pool: Sequence[str] | None = None) -> Iterator[InboundCall]:
    """``rate`` calls per second for ``seconds``, evenly spaced, ANI drawn from the pool."""
    rng = random.Random(profile.seed)
    anis = list(pool or profile.ani_pool or synthetic_ani_pool(seed=profile.seed))
    total = int(profile.rate * profile.seconds)
    for i in range(total):
        yield InboundCall(
            at=i / profile.rate,
            ani=rng.choice(anis),
            did=profile.did,
            ring_timeout=profile.ring_timeout,
        )
