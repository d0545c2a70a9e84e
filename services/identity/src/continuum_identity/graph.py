"""Customers as connected components of the link log (union-find), and what an unmerge
or split makes of them.

Pure functions over identifier ids and links; the resolver loads a customer's identifiers
and active links, removes the links an unmerge or split takes away, and asks
:func:`assign_components` which customer id each remaining component gets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence


class UnionFind:
    """Disjoint sets over hashable items, with path halving and union by size."""

    def __init__(self, items: Iterable[int] = ()) -> None:
        self._parent: dict[int, int] = {}
        self._size: dict[int, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: int) -> None:
        if item not in self._parent:
            self._parent[item] = item
            self._size[item] = 1

    def find(self, item: int) -> int:
        self.add(item)
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for item in self._parent:
            out.setdefault(self.find(item), []).append(item)
        return [sorted(members) for members in out.values()]


def components(nodes: Iterable[int], edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components, each sorted, ordered by their smallest member."""
    uf = UnionFind(nodes)
    for a, b in edges:
        uf.union(a, b)
    return sorted(uf.groups(), key=lambda group: group[0])


def assign_components(
    groups: Sequence[Sequence[int]],
    origin: Mapping[int, str],
    keep_id: str,
    available_ids: Iterable[str],
) -> list[str | None]:
    """Which customer id each component gets after an unmerge or split.

    ``origin`` maps an identifier to the customer it was first seen under. The component
    holding the most identifiers that originated under ``keep_id`` keeps it (ties: the
    first); other components take back a merged-away id from ``available_ids`` that most of
    their identifiers originated under, so an undone merge restores the old customer; a
    component with no such id gets None (the caller makes a new customer).
    """
    available = set(available_ids)
    result: list[str | None] = [None] * len(groups)

    def votes(group: Sequence[int], candidate: str) -> int:
        return sum(1 for node in group if origin.get(node) == candidate)

    keeper = max(range(len(groups)), key=lambda i: (votes(groups[i], keep_id), -i), default=-1)
    if keeper >= 0:
        result[keeper] = keep_id
    taken = {keep_id}
    for i, group in enumerate(groups):
        if result[i] is not None:
            continue
        counts: dict[str, int] = {}
        for node in group:
            candidate = origin.get(node)
            if candidate in available and candidate not in taken:
                counts[candidate] = counts.get(candidate, 0) + 1
        if counts:
            best = max(sorted(counts), key=lambda c: counts[c])
            result[i] = best
            taken.add(best)
    return result


def shortest_path(start: int, goal: int, edges: Iterable[tuple[int, int, str]]) -> list[str] | None:
    """Link ids along a shortest path from ``start`` to ``goal`` (None when unconnected)."""
    adjacency: dict[int, list[tuple[int, str]]] = {}
    for a, b, link_id in edges:
        adjacency.setdefault(a, []).append((b, link_id))
        adjacency.setdefault(b, []).append((a, link_id))
    previous: dict[int, tuple[int, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path: list[str] = []
            step = previous[node]
            while step is not None:
                path.append(step[1])
                step = previous[step[0]]
            return list(reversed(path))
        for neighbour, link_id in sorted(adjacency.get(node, [])):
            if neighbour not in previous:
                previous[neighbour] = (node, link_id)
                queue.append(neighbour)
    return None
