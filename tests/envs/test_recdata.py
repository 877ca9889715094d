from envs.recdata import item_window, user_window
from rewards.rec.data import Interaction, RecData


def _toy() -> RecData:
    inter = {
        "u1": [Interaction("u1", i, t) for i, t in [("a", 1), ("b", 2), ("c", 3), ("d", 4)]],
        "u2": [Interaction("u2", i, t) for i, t in [("a", 5), ("c", 6)]],
        "u3": [Interaction("u3", "b", 7)],
    }
    return RecData(inter)


def test_windows():
    d = _toy()
    h = d.interactions["u1"]
    assert [x.item for x in user_window(h, before=4, n=2)] == ["b", "c"]
    assert [x.item for x in user_window(h, n=10)] == ["a", "b", "c", "d"]
    assert [(x.user, x.item) for x in item_window(d, "a", before=6)] == [("u1", "a"), ("u2", "a")]
    assert [x.user for x in item_window(d, "a", before=5)] == ["u1"]
    assert [x.user for x in item_window(d, "b", n=1)] == ["u3"]
    assert [x.user for x in item_window(d, "c", exclude_user="u2")] == ["u1"]
