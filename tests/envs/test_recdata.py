from envs.recdata import item_window, user_window
from tests.helpers import toy_rec_data


def test_windows():
    d = toy_rec_data()
    h = d.interactions["u1"]
    assert [x.item for x in user_window(h, before=4, n=2)] == ["b", "c"]
    assert [x.item for x in user_window(h, n=10)] == ["a", "b", "c", "d"]
    assert [(x.user, x.item) for x in item_window(d, "a", before=6)] == [("u1", "a"), ("u2", "a")]
    assert [x.user for x in item_window(d, "a", before=5)] == ["u1"]
    assert [x.user for x in item_window(d, "b", n=1)] == ["u3"]
    assert [x.user for x in item_window(d, "c", exclude_user="u2")] == ["u1"]
