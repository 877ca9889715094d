import pytest

from envs.duet import ParsedProfiles, build_messages, check_profiles, parse_profiles, template_completion
from rewards.rec.data import ItemInfo


def blk(name, cue="c", prompt="p", profile="the profile"):
    return f"<{name}><cue>{cue}</cue><constructed_prompt>{prompt}</constructed_prompt><profile>{profile}</profile></{name}>"


GOOD = (
    "Let me think.\n"
    + blk("user_profile", profile="likes pens")
    + "\n"
    + blk("item_profile", cue="ink", profile="a blue pen")
)


def test_parse_joint_and_scope():
    p = parse_profiles(GOOD)
    assert isinstance(p, ParsedProfiles)
    assert p.user.profile == "likes pens" and p.item.profile == "a blue pen" and p.item.cue == "ink"
    # item block first is fine: fields are scoped to their block
    q = parse_profiles(blk("item_profile", profile="I") + blk("user_profile", profile="U"))
    assert (q.user.profile, q.item.profile) == ("U", "I")
    u = parse_profiles(blk("user_profile", profile="U"), mode="user_only")
    assert u.user.profile == "U" and u.item is None


@pytest.mark.parametrize(
    "text, mode, reason",
    [
        (blk("user_profile"), "joint", "no <item_profile>"),
        (blk("item_profile"), "joint", "no <user_profile>"),
        (GOOD, "user_only", "present in user_only"),
        ("<user_profile><cue>c</cue><profile>x</profile></user_profile>", "user_only", "lacks <constructed_prompt>"),
        (blk("user_profile", profile="  "), "user_only", "empty"),
        (blk("user_profile") + blk("user_profile"), "user_only", "more than once"),
        (
            "<user_profile><cue>a</cue><cue>b</cue><constructed_prompt>p</constructed_prompt><profile>x</profile></user_profile>",
            "user_only",
            "<cue> appears more than once",
        ),
        (
            "<user_profile>" + blk("item_profile") + "</user_profile>",
            "joint",
            "<item_profile> opened inside <user_profile>",
        ),
        ("<user_profile><cue>a<profile>x</profile></cue></user_profile>", "user_only", "opened inside <cue>"),
        ("<cue>c</cue>" + blk("user_profile"), "user_only", "outside any profile block"),
        (blk("user_profile")[: -len("</user_profile>")], "user_only", "not closed"),
        (blk("user_profile") + "</profile>", "user_only", "without a matching open tag"),
        ("<user_profile><cue>c</constructed_prompt></user_profile>", "user_only", "closes <cue>"),
        ("<USER_PROFILE>" + blk("user_profile")[14:], "user_only", "<cue> outside any profile block"),
        ("no tags at all", "user_only", "no <user_profile>"),
    ],
)
def test_parse_failures(text, mode, reason):
    parsed, why = check_profiles(text, mode)
    assert parsed is None and reason in why
    assert parse_profiles(text, mode) is None


def test_build_messages():
    m = build_messages(
        ["Title: pen", "Title: ink"], "Title: paper", mode="joint", item_history_texts=["user 3 liked it"]
    )
    assert [x["role"] for x in m] == ["system", "user"]
    assert "<item_profile>" in m[0]["content"] and "<constructed_prompt>" in m[0]["content"]
    assert "1. Title: pen\n2. Title: ink" in m[1]["content"] and "The item: Title: paper" in m[1]["content"]
    u = build_messages(["Title: pen"], mode="user_only")
    assert "<item_profile>" not in u[0]["content"] and "The item" not in u[1]["content"]
    with pytest.raises(ValueError, match="leak"):
        build_messages(["Title: pen"], "Title: paper", mode="user_only")
    with pytest.raises(ValueError, match="needs item_text"):
        build_messages(["x"], mode="joint")


def test_template_completion_parses():
    hist = [
        ItemInfo(title="Stanley Staples 1/2-Inch <Heavy>", brand="Stanley", categories=["Tools", "Staples"]),
        ItemInfo(title="Arrow Staples T50", brand="Arrow", categories=["Tools", "Staples"]),
        ItemInfo(title="Capacitor Kit", categories=["Electrical", "Capacitors"]),
    ]
    item = ItemInfo(title="Bostitch Staple Gun", brand="Bostitch", categories=["Tools", "Staple Guns"])
    p = parse_profiles(template_completion(hist, item, "joint"), "joint")
    assert p is not None
    assert p.user.cue.startswith("staples") and "Stanley" in p.user.profile
    assert "Bostitch Staple Gun" in p.item.profile and "staple guns" in p.item.cue
    u = parse_profiles(template_completion(hist, mode="user_only"), "user_only")
    assert u is not None and u.item is None
    assert parse_profiles(template_completion([], ItemInfo(), "joint"), "joint") is not None  # degenerate inputs
