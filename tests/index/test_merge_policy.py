"""The tiered merge policy, as arithmetic on segment sizes: segment counts stay logarithmic,
every byte is rewritten a few times at most, merged segments respect the cap, deletions are
expunged, and force-merges reach their target."""

import math

import pytest

from lsr.errors import InputError
from lsr.index import SegmentInfo, TieredMergePolicy

MB = 2**20


def _simulate(policy, flushes, flush_bytes, delete_every=0):
    """Flush ``flushes`` segments of ``flush_bytes`` and run the policy's merges after each
    (deleting a tenth of the oldest segment's documents every ``delete_every`` flushes);
    returns the segments, the most segments seen, and bytes written / bytes flushed."""
    segments, counter, written, most = [], 0, 0, 0
    for i in range(flushes):
        segments.append(SegmentInfo(f"s{counter}", 1000, 0, flush_bytes))
        counter += 1
        written += flush_bytes
        if delete_every and i % delete_every == delete_every - 1:
            old = segments[0]
            segments[0] = SegmentInfo(old.name, old.n_docs, old.n_deleted + old.n_docs // 10,
                                      old.bytes)  # fmt: skip
        while merges := policy.find_merges(segments):
            for names in merges:
                chosen = [s for s in segments if s.name in names]
                live_docs = sum(s.n_docs - s.n_deleted for s in chosen)
                size = int(sum(s.live_bytes for s in chosen))
                segments = [s for s in segments if s.name not in names]
                if live_docs:
                    segments.append(SegmentInfo(f"s{counter}", live_docs, 0, size))
                    counter += 1
                    written += size
        most = max(most, len(segments))
    return segments, most, written / (flushes * flush_bytes)


def test_segment_count_grows_with_the_logarithm_and_bytes_are_rewritten_a_few_times():
    policy = TieredMergePolicy(segments_per_tier=10, max_merge_at_once=10)
    for flushes in (100, 1000):
        segments, most, amplification = _simulate(policy, flushes, 4 * MB)
        tiers = math.ceil(math.log(flushes, 10)) + 1
        assert len(segments) <= most <= policy.segments_per_tier * tiers
        assert amplification <= tiers + 1  # each byte: flushed once, merged once per tier
    _, _, amplification_100 = _simulate(policy, 100, 4 * MB)
    assert amplification_100 < 4


def test_merges_never_exceed_the_cap_and_large_segments_are_left_alone():
    policy = TieredMergePolicy(max_merged_segment_bytes=64 * MB, floor_segment_bytes=MB)
    segments, _, _ = _simulate(policy, 400, 4 * MB)
    assert all(s.bytes <= 64 * MB for s in segments)
    big = [SegmentInfo(f"b{i}", 1000, 0, 40 * MB) for i in range(30)]
    assert policy.find_merges(big) == []  # over half the cap: never merged for size


def test_similar_sizes_merge_together_not_a_large_one_with_small_ones():
    policy = TieredMergePolicy(segments_per_tier=2, max_merge_at_once=4, floor_segment_bytes=1)
    segments = [SegmentInfo("big", 10**6, 0, 900 * MB)] + [
        SegmentInfo(f"s{i:02d}", 1000, 0, MB) for i in range(20)
    ]
    assert len(segments) > policy.allowed_segments(segments)
    merges = policy.find_merges(segments)
    assert merges and all("big" not in m and len(m) == 4 for m in merges)
    assert len(segments) - sum(len(m) - 1 for m in merges) <= policy.allowed_segments(segments)


def test_segments_with_many_deletions_are_rewritten_without_them():
    policy = TieredMergePolicy(deletes_pct_allowed=20)
    segments = [
        SegmentInfo("a", 1000, 500, 40 * MB),
        SegmentInfo("b", 1000, 100, 40 * MB),
        SegmentInfo("c", 1000, 1000, 40 * MB),
        SegmentInfo("huge", 10**7, 6 * 10**6, 8 * 2**30),  # over the cap, but mostly deleted
    ]
    assert sorted(policy.find_merges(segments)) == [["a"], ["c"], ["huge"]]
    assert policy.find_merges(segments, merging=frozenset({"a"})) == [["c"], ["huge"]]


def test_force_merge_reaches_its_target():
    policy = TieredMergePolicy()
    segments = [SegmentInfo(f"s{i}", 100 * (i + 1), 0, (i + 1) * MB) for i in range(7)]
    merges = policy.find_forced_merges(segments, 3)
    assert merges == [["s0", "s1", "s2", "s3", "s4"]]  # the smallest ones, into one
    assert policy.find_forced_merges(segments[:3], 3) == []
    deleted = [SegmentInfo("a", 10, 2, MB), SegmentInfo("b", 10, 10, MB)]
    assert policy.find_forced_merges(deleted, 1) == [["b"], ["a"]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"segments_per_tier": 0}, "segments_per_tier must be a positive integer"),
        ({"max_merge_at_once": 1}, "max_merge_at_once must be at least 2"),
        ({"deletes_pct_allowed": 0}, "deletes_pct_allowed must be in"),
        ({"deletes_pct_allowed": True}, "deletes_pct_allowed must be in"),
        ({"floor_segment_bytes": -1}, "floor_segment_bytes must be a positive integer"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        TieredMergePolicy(**options)
