"""Which segments to merge: a tiered policy in the manner of Lucene's TieredMergePolicy.

Segments are weighed by their bytes on disk scaled by the share of their documents still
live, small ones counted as ``floor_segment_bytes``. The collection may hold about
``segments_per_tier`` segments per tier of size (tiers grow ``max_merge_at_once`` times),
so the number of segments grows with the logarithm of the collection. Beyond that budget the
policy picks, among runs of segments of similar size (adjacent in size order), the merge of
at most ``max_merge_at_once`` of them with the best score: low skew (no segment dominates the
merge, so each byte is rewritten few times), small total size, many deletions reclaimed. A
merged segment never exceeds ``max_merged_segment_bytes``; segments near that size are merged
only to expunge deletions. A segment whose deleted share exceeds ``deletes_pct_allowed`` is
rewritten without them (a singleton merge), so searches do not keep scanning dead postings.

Everything here is arithmetic on :class:`SegmentInfo` values; the collection
(:class:`lsr.index.LiveIndex`) runs the merges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lsr.checks import positive_int
from lsr.errors import InputError


@dataclass(frozen=True)
class SegmentInfo:
    """What the policy knows of a segment."""

    name: str
    n_docs: int
    n_deleted: int
    bytes: int

    @property
    def deleted_share(self) -> float:
        return self.n_deleted / self.n_docs if self.n_docs else 0.0

    @property
    def live_bytes(self) -> float:
        """The bytes the segment's live documents take, about."""
        return self.bytes * (1.0 - self.deleted_share)


@dataclass(frozen=True)
class TieredMergePolicy:
    """Choose merges so that the number of segments stays logarithmic in the collection and
    each document is rewritten a few times at most (see the module docstring)."""

    segments_per_tier: int = 10
    max_merge_at_once: int = 10
    max_merged_segment_bytes: int = 5 * 2**30
    floor_segment_bytes: int = 2 * 2**20
    deletes_pct_allowed: float = 20.0

    def __post_init__(self) -> None:
        positive_int(self.segments_per_tier, "segments_per_tier")
        positive_int(self.floor_segment_bytes, "floor_segment_bytes")
        positive_int(self.max_merged_segment_bytes, "max_merged_segment_bytes")
        if positive_int(self.max_merge_at_once, "max_merge_at_once") < 2:
            raise InputError("max_merge_at_once must be at least 2.")
        pct = self.deletes_pct_allowed
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 100:
            raise InputError(f"deletes_pct_allowed must be in (0, 100], got {pct!r}.")

    def _size(self, s: SegmentInfo) -> float:
        return max(s.live_bytes, float(self.floor_segment_bytes))

    def _too_large(self, s: SegmentInfo) -> bool:
        return s.live_bytes > self.max_merged_segment_bytes / 2

    def allowed_segments(self, segments: Sequence[SegmentInfo]) -> int:
        """How many segments of these sizes the collection may hold before merging."""
        sizes = [self._size(s) for s in segments]
        if not sizes:
            return self.segments_per_tier
        remaining, level, allowed = sum(sizes), min(sizes), 0.0
        while True:
            per_level = remaining / level
            if per_level < self.segments_per_tier or level >= self.max_merged_segment_bytes:
                allowed += math.ceil(per_level)
                break
            allowed += self.segments_per_tier
            remaining -= self.segments_per_tier * level
            level *= self.max_merge_at_once
        return max(int(allowed), self.segments_per_tier)

    def find_merges(
        self, segments: Sequence[SegmentInfo], merging: frozenset[str] = frozenset()
    ) -> list[list[str]]:
        """The merges to run now (each a list of segment names, none in two merges); segments
        in ``merging`` (merges already running) are left alone."""
        idle = [s for s in segments if s.name not in merging]
        merges: list[list[str]] = []
        eligible = sorted(
            (s for s in idle if not self._too_large(s) and s.n_docs > s.n_deleted),
            key=lambda s: (-self._size(s), s.name),
        )
        count = len([s for s in idle if not self._too_large(s)]) + len(merging)
        allowed = self.allowed_segments([s for s in segments if not self._too_large(s)])
        while count > allowed:
            best = self._best_merge(eligible)
            if best is None:
                break
            merges.append([s.name for s in best])
            chosen = {s.name for s in best}
            eligible = [s for s in eligible if s.name not in chosen]
            count -= len(best) - 1
        chosen = {name for m in merges for name in m}
        for s in idle:  # expunge deletions
            if s.name in chosen or not s.n_deleted:
                continue
            if s.n_deleted == s.n_docs or 100 * s.deleted_share > self.deletes_pct_allowed:
                merges.append([s.name])
        return merges

    def _best_merge(self, eligible: list[SegmentInfo]) -> list[SegmentInfo] | None:
        """The best-scoring run of similar-sized segments (lower score is better)."""
        best, best_score = None, math.inf
        for start in range(len(eligible)):
            candidate, total = [], 0.0
            for s in eligible[start:]:
                if len(candidate) == self.max_merge_at_once:
                    break
                if total + s.live_bytes > self.max_merged_segment_bytes:
                    continue  # too big for this merge: a smaller one may still fit
                candidate.append(s)
                total += s.live_bytes
            if len(candidate) < 2:
                continue
            score = self._score(candidate)
            if score < best_score:
                best, best_score = candidate, score
        return best

    def _score(self, candidate: list[SegmentInfo]) -> float:
        floored = [self._size(s) for s in candidate]
        skew = max(floored) / sum(floored)
        total = sum(s.live_bytes for s in candidate)
        kept = total / max(sum(s.bytes for s in candidate), 1)
        return skew * max(total, 1.0) ** 0.05 * kept**2

    def find_forced_merges(
        self, segments: Sequence[SegmentInfo], max_segments: int
    ) -> list[list[str]]:
        """Merges that leave at most ``max_segments`` segments (a force-merge): the smallest
        segments are merged together, ignoring the size cap; one segment with deletions is
        rewritten without them."""
        positive_int(max_segments, "max_segments")
        live = [s for s in segments if s.n_docs > s.n_deleted]
        gone = [[s.name] for s in segments if s.n_docs and s.n_docs == s.n_deleted]
        if len(live) <= max_segments:
            return gone + [[s.name] for s in live if s.n_deleted]
        by_size = sorted(live, key=lambda s: (s.live_bytes, s.name))
        keep = len(live) - max_segments + 1  # the smallest ones, merged into one
        return gone + [[s.name for s in by_size[:keep]]]
