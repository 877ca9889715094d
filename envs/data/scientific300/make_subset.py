"""Derive this folder from the full Amazon 2018 Scientific data (LC-Rec format); rerun to rebuild.

    python envs/data/scientific300/make_subset.py ../shared/data/rec/amazon2018_scientific

300 users drawn with a fixed seed (all of their interactions, in order, kept), the items they touched,
descriptions cut to 200 characters at a word boundary. Ids are the original ones.
"""

import json
import random
import sys
from pathlib import Path

src = Path(sys.argv[1])
out = Path(__file__).resolve().parent
inter = json.loads((src / "Scientific.inter.json").read_text())
items = json.loads((src / "Scientific.item.json").read_text())
users = sorted(inter, key=int)
random.Random(0).shuffle(users)
chosen = sorted(users[:300], key=int)
sub_inter = {u: inter[u] for u in chosen}
used = sorted({str(i) for u in chosen for i in inter[u]}, key=int)


def cut(s: str, n: int = 200) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n].rsplit(" ", 1)[0] + " ..."


sub_items = {i: {**items[i], "description": cut(items[i].get("description", ""))} for i in used}
(out / "Scientific300.inter.json").write_text(json.dumps(sub_inter, separators=(",", ":")) + "\n")
(out / "Scientific300.item.json").write_text(json.dumps(sub_items, indent=None, ensure_ascii=False) + "\n")
print(f"{len(sub_inter)} users, {len(sub_items)} items, {sum(len(v) for v in sub_inter.values())} interactions")
