"""Popularity vs SASRec on a recommendation data set, TIGER's protocol (leave-one-out, full ranking).

    OMP_NUM_THREADS=1 python bench/rec_baselines.py DATA.inter.json [--format p5 --item-path ITEMS]
        [--max-epochs 300 --patience 10 --device cuda --seed 0 --json]

Prints the data line, the protocol line, SASRec's epochs / best epoch / wall time, and the table of
test Recall@5/10 and NDCG@5/10. SASRec uses RecBole's defaults (``rewards.rec.baselines.SASRecConfig``)
and logs one line per epoch to stderr. Same as ``python -m rewards.rec.baselines``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.rec.baselines import main  # noqa: E402

if __name__ == "__main__":
    main()
