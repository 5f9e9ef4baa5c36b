"""Next uncertain slice: uncertainty chooses, but never a cluster of neighbouring slices."""
from training.interactive.active_learning import spread_pick


def test_spread_pick_skips_the_neighbours_of_taken_slices():
    # the most uncertain slices are all at the top end of a 32-slice volume
    order = [31, 30, 29, 28, 27, 5, 16, 0, 10, 20]
    assert spread_pick(order, 32, 1) == [31]  # nothing taken: the most uncertain
    picks = spread_pick(order, 32, 3)
    assert picks[0] == 31
    assert picks[1] == 5  # 30, 29, 28, 27 are within 32 // 4 = 8 slices of 31
    assert picks[2] == 16  # 32 // 6 = 5 slices from 31 and 5
    assert all(abs(a - b) >= 5 for i, a in enumerate(picks) for b in picks[i + 1:])


def test_spread_pick_respects_taken_slices_and_shrinks_the_gap_when_needed():
    assert spread_pick([3, 4, 9], 10, 1, taken=[4]) == [9]
    # only neighbours are left: the gap halves until one qualifies
    assert spread_pick([3, 5], 10, 1, taken=[4]) == [3]
    assert spread_pick([1, 2], 3, 5, taken=[0]) == [1, 2]  # stops when none is left
    assert spread_pick([1], 3, 2, taken=[1]) == []
