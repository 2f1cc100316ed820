"""ids.IdColumn: the ids of held events in one buffer, as a list of them would be."""

import random

import pytest

from exporter.sources.stripe.ids import IdColumn


def test_an_id_column_reads_back_what_a_list_holds_through_appends_and_replaced_runs():
    rng = random.Random(3)
    alphabet = "abcXYZ019_é"  # é: two bytes in UTF-8

    def some_id():
        return "evt_" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))

    for trial in range(300):
        expected = [some_id() for _ in range(rng.randint(0, 8))]
        column = IdColumn(expected)
        for _ in range(rng.randint(0, 6)):
            if rng.random() < 0.5:
                value = some_id()
                column.append(value)
                expected.append(value)
            else:  # a run replaced by another column's ids, wider or narrower
                start = rng.randint(0, len(expected))
                stop = rng.randint(start, len(expected))
                new = [some_id() for _ in range(rng.randint(0, 4))]
                column[start:stop] = IdColumn(new)
                expected[start:stop] = new
        assert len(column) == len(expected), trial
        assert [column[row] for row in range(len(column))] == expected, trial
        if expected:
            assert column[-1] == expected[-1]


def test_an_id_column_refuses_what_it_cannot_hold():
    column = IdColumn(["evt_1"])
    with pytest.raises(IndexError):
        column[1]
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        column.append("x" * 256)
    with pytest.raises(ValueError, match="run of rows"):
        column[::2] = IdColumn()
    assert column[0] == "evt_1"  # nothing half-added
