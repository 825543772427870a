"""Small pieces shared by the networks."""

from __future__ import annotations


def group_count(channels: int, max_groups: int) -> int:
    """The largest GroupNorm group count <= `max_groups` (at least 1) that divides `channels`: GroupNorm needs a
    divisor, and narrow tiny models have fewer channels than the usual 32 groups."""
    return next(g for g in range(max(1, min(max_groups, channels)), 0, -1) if channels % g == 0)
