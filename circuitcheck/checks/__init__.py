"""The checks: pure functions that measure a claim, and assertions that decide it."""

from .heads import (
    assert_bos_head,
    assert_duplicate_token_head,
    assert_head_matches_pattern,
    assert_induction_head,
    assert_previous_token_head,
    check_head,
)

__all__ = [
    "assert_bos_head",
    "assert_duplicate_token_head",
    "assert_head_matches_pattern",
    "assert_induction_head",
    "assert_previous_token_head",
    "check_head",
]
