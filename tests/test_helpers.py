"""tests/helpers.py's GPU skip: one mark, one message naming what is missing."""

from __future__ import annotations

from tests.helpers import requires_cuda


def _marks(test) -> dict[str, object]:
    return {m.name: m for m in test.pytestmark}


def test_requires_cuda_marks_gpu_and_names_what_is_missing():
    @requires_cuda("a huge model", min_gpus=10**6, modules=("no_such_module_for_relay",))
    def needs_a_lot():
        pass

    marks = _marks(needs_a_lot)
    assert set(marks) == {"gpu", "skipif"}
    assert marks["skipif"].args == (True,)
    assert marks["skipif"].kwargs["reason"].startswith("needs 1000000 CUDA GPUs (found ")
    assert marks["skipif"].kwargs["reason"].endswith(" and the no_such_module_for_relay package: a huge model")

    @requires_cuda("nothing", min_gpus=0, modules=("json",))
    def needs_nothing():
        pass

    assert _marks(needs_nothing)["skipif"].args == (False,)  # present: it runs (still selectable with -m gpu)
