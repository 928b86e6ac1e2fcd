"""common/paging.py: pages cover a listing once, and survive changes between calls."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.paging import page


def key(item: tuple[float, str]) -> tuple[float, str]:
    return item


class TestPages:
    @given(
        items=st.lists(st.tuples(st.floats(0, 100), st.text(max_size=3)), unique=True),
        size=st.integers(1, 7),
    )
    def test_pages_cover_every_item_once_in_order(
        self, items: list[tuple[float, str]], size: int
    ) -> None:
        seen: list[tuple[float, str]] = []
        token = ""
        while True:
            chunk, token = page(items, key, size, token)
            assert len(chunk) <= size
            seen += chunk
            if not token:
                break
        assert seen == sorted(items)

    def test_items_added_behind_the_cursor_do_not_shift_the_next_page(self) -> None:
        items = [(float(i), "k") for i in range(10)]
        first, token = page(items, key, 4, "")
        items.insert(0, (-1.0, "new"))
        second, _ = page(items, key, 4, token)
        assert first[-1] == (3.0, "k") and second[0] == (4.0, "k")

    @pytest.mark.parametrize(
        "token", ["!!!", "bm90IGpzb24=", "NQ=="], ids=["not-b64", "not-json", "not-a-list"]
    )
    def test_a_token_not_made_here_is_invalid_argument(self, token: str) -> None:
        with pytest.raises(InvalidArgument, match="page_token"):
            page([(1.0, "a")], key, 1, token)
