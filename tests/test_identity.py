"""Face-track stretches linked into persons by their embeddings (dfer_cli.people.identity)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dfer_cli.errors import DferError
from dfer_cli.people.identity import SAME_PERSON, Persons, Stretch, link

RNG = np.random.default_rng(0)
# Two made-up faces 0.8 apart (like two GRID speakers), and small per-stretch noise (0.05).
A = RNG.normal(size=128)
A *= 0.7 / np.linalg.norm(A)
B = A.copy()
B[:2] += [0.8 / np.sqrt(2)] * 2


def face(base: np.ndarray, noise: float = 0.05) -> np.ndarray:
    step = RNG.normal(size=base.shape)
    return base + noise * step / np.linalg.norm(step)


def stretch(start: float, end: float, embedding, x: float = 0.0, frames: int = 5) -> Stretch:
    return Stretch(start, end, embedding, x, frames)


def test_a_cut_between_two_people_gives_two_persons():
    persons = link([stretch(0, 2.96, face(A), 100), stretch(3, 6, face(B), 100)])
    assert persons == Persons((0, 1)) and persons.count == 2


def test_a_person_coming_back_after_someone_else_is_the_same_person():
    persons = link([stretch(0, 3, face(A)), stretch(3.04, 6, face(B)), stretch(6.04, 9, face(A))])
    assert persons.of_stretch == (0, 1, 0)


def test_one_person_cut_from_left_to_right_is_one_person():
    assert link([stretch(0, 1.5, face(A), x=20), stretch(1.54, 3, face(A), x=300)]).of_stretch == (0, 0)


def test_split_screen_of_one_person_is_two_persons():
    """The same face twice at once (a split screen) is never one person, however close the embeddings."""
    persons = link([stretch(0, 3, face(A, 0.01), x=400), stretch(0, 3, face(A, 0.01), x=10)])
    assert persons.of_stretch == (1, 0)  # first appearance tied: left to right


def test_seen_at_the_same_time_for_one_frame_is_enough_to_keep_apart():
    assert link([stretch(0, 2, face(A)), stretch(2, 4, face(A))]).count == 2
    assert link([stretch(0, 2, face(A)), stretch(2.04, 4, face(A))]).count == 1


def test_a_stretch_of_one_frame_links_like_any_other():
    persons = link([stretch(0, 3, face(A)), stretch(3.04, 3.04, face(A, 0.2), frames=1), stretch(3.08, 5, face(B))])
    assert persons.of_stretch == (0, 0, 1)


def test_a_stretch_without_a_frontal_frame_is_a_person_of_its_own():
    persons = link([stretch(0, 3, face(A)), stretch(3.04, 4, None, frames=0), stretch(4.04, 6, face(A))])
    assert persons.of_stretch == (0, 1, 0)


def test_persons_are_numbered_by_first_appearance_then_left_to_right():
    stretches = [stretch(5, 6, face(B), x=0), stretch(1, 2, face(A), x=300), stretch(1, 2, face(B) + 0.5, x=50)]
    assert link(stretches).of_stretch == (2, 1, 0)


def test_the_threshold_decides():
    near = [stretch(0, 1, A), stretch(2, 3, A + np.eye(128)[5] * (SAME_PERSON - 0.01))]
    far = [stretch(0, 1, A), stretch(2, 3, A + np.eye(128)[5] * (SAME_PERSON + 0.01))]
    assert link(near).count == 1 and link(far).count == 2


def test_closest_stretches_join_first_and_a_group_keeps_its_overlaps():
    """A1 and A2 overlap in time; C, between them in embedding, can join only one of them, the closer."""
    a1, a2 = face(A, 0.0), A + np.eye(128)[7] * 0.3
    c = A + np.eye(128)[7] * 0.2  # 0.2 from a1, 0.1 from a2
    persons = link([stretch(0, 2, a1, x=0), stretch(0, 2, a2, x=200), stretch(3, 4, c)])
    assert persons.of_stretch == (0, 1, 1)


def test_nothing_gives_no_persons_and_bad_times_are_refused():
    assert link([]) == Persons(()) and link([]).count == 0
    with pytest.raises(DferError, match="before it starts"):
        link([stretch(3, 2, face(A))])


def test_a_trailer_of_many_shots_links_quickly():
    """400 stretches (100 shots of four faces, four people): linked in 0.4 s (measured, a loaded CPU)."""
    people = [A, B, A + np.eye(128)[9] * 0.8, B + np.eye(128)[11] * 0.8]
    stretches = [stretch(shot, shot + 0.96, face(people[k], 0.05), x=100 * k) for shot in range(100) for k in range(4)]
    began = time.perf_counter()
    persons = link(stretches)
    assert time.perf_counter() - began < 5
    assert persons.of_stretch == tuple(k for _ in range(100) for k in range(4))
