"""Compile-time activation memory plan: liveness over the topological order.

Every activation a step produces is assigned to one of a few reusable buffers.  A
buffer becomes free again right after the last step that reads its value; the next
value takes the smallest free buffer that fits (growing the largest free one when none
fits).  Sizes are per sample, so one plan serves every batch size: the executor
allocates ``batch * size`` elements per buffer once per batch size and carves views.

A key/value-cached decoder's caches are persistent values: held from one call to the next, never
shared, and counted with the buffers.

An op that may run in place (``inplace=True``: ReLU, batchnorm, ...) reuses its first
input's buffer when that input dies at this step.  Network outputs stay alive to the
end.

>>> plan = plan_memory([
...     Value("a", 100, ()), Value("b", 100, ("a",)), Value("c", 100, ("b",), inplace=True),
...     Value("d", 100, ("c",))], outputs=["d"])
>>> plan.assignment
{'a': 0, 'b': 1, 'c': 1, 'd': 0}
>>> plan.planned_bytes, plan.keep_all_bytes
(200, 400)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Value:
    """One activation: its producer's name, per-sample bytes and the values it reads."""

    name: str
    nbytes: int
    inputs: tuple[str, ...]
    inplace: bool = False


@dataclass
class MemoryPlan:
    """Buffer sizes (per-sample bytes) and which buffer each value lives in."""

    buffers: list[int] = field(default_factory=list)
    assignment: dict[str, int] = field(default_factory=dict)
    keep_all_bytes: int = 0
    last_use: dict[str, int] = field(default_factory=dict)
    persistent: dict[str, int] = field(default_factory=dict)  # a cache's name -> its per-sample bytes

    @property
    def planned_bytes(self) -> int:
        """Per-sample bytes of all buffers and persistent values together (the plan's peak)."""
        return sum(self.buffers) + sum(self.persistent.values())

    def describe(self, batch: int = 1) -> str:
        """One line: planned vs keep-every-tensor-alive bytes at ``batch``."""
        planned, keep = self.planned_bytes * batch, self.keep_all_bytes * batch
        saved = 100.0 * (1 - planned / keep) if keep else 0.0
        return (
            f"activations at batch {batch}: {_mib(planned)} in {len(self.buffers)} buffers "
            f"vs {_mib(keep)} keeping every tensor alive ({saved:.0f}% less)"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def plan_memory(values: Sequence[Value], outputs: Iterable[str] = (),
                persistent: Mapping[str, int] | None = None) -> MemoryPlan:
    """Assign ``values`` (in execution order) to reusable buffers; ``persistent`` values (name -> per-sample bytes)
    each keep their own memory across calls.

    Inputs that no value produces (the network's inputs) are external and never planned.
    """
    order = {v.name: i for i, v in enumerate(values)}
    end = len(values)
    last_use: dict[str, int] = {v.name: order[v.name] for v in values}
    for i, v in enumerate(values):
        for src in v.inputs:
            if src in last_use:
                last_use[src] = max(last_use[src], i)
    for name in outputs:
        if name in last_use:
            last_use[name] = end

    kept = dict(persistent or {})
    plan = MemoryPlan(keep_all_bytes=sum(v.nbytes for v in values) + sum(kept.values()), last_use=last_use,
                      persistent=kept)
    free: list[int] = []  # buffer ids
    holders: dict[int, int] = {}  # buffer id -> number of live values in it
    for i, v in enumerate(values):
        buf = None
        if v.inplace and v.inputs:
            src = v.inputs[0]
            if src in plan.assignment and last_use[src] == i and holders[plan.assignment[src]] == 1:
                buf = plan.assignment[src]
                plan.buffers[buf] = max(plan.buffers[buf], v.nbytes)
        if buf is None:
            buf = _take(plan.buffers, free, v.nbytes)
        plan.assignment[v.name] = buf
        holders[buf] = holders.get(buf, 0) + 1
        # release everything whose last reader is this step (not the value just written)
        for src in dict.fromkeys(v.inputs):
            if src in plan.assignment and last_use[src] == i:
                _release(plan.assignment[src], holders, free)
        if last_use[v.name] == i:  # produced but never read (and not an output)
            _release(buf, holders, free)
    return plan


def _release(buf: int, holders: dict[int, int], free: list[int]) -> None:
    holders[buf] -= 1
    if holders[buf] == 0:
        free.append(buf)


def _take(buffers: list[int], free: list[int], nbytes: int) -> int:
    fitting = [b for b in free if buffers[b] >= nbytes]
    if fitting:
        buf = min(fitting, key=lambda b: buffers[b])
    elif free:
        buf = max(free, key=lambda b: buffers[b])
        buffers[buf] = nbytes
    else:
        buffers.append(nbytes)
        return len(buffers) - 1
    free.remove(buf)
    return buf
