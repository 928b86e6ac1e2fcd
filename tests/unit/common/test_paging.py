"""common/paging.py: pages cover a listing once, and survive changes between calls."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.paging import page, rendered_page


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


class Blob:
    """A rendered item of a given encoded size."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def ByteSize(self) -> int:
        return self.size


class TestRenderedPages:
    @given(sizes=st.lists(st.integers(1, 100), min_size=1, max_size=40), budget=st.integers(1, 250))
    def test_byte_bounded_pages_cover_every_item_once_and_stay_in_budget(
        self, sizes: list[int], budget: int
    ) -> None:
        items = [(float(i), f"k{i}") for i in range(len(sizes))]
        size_of = {name: size for (_, name), size in zip(items, sizes, strict=True)}
        seen: list[str] = []
        token = ""
        while True:
            chunk, token = rendered_page(
                items, key, 10, token, lambda i: Blob(i[1], size_of[i[1]]), max_bytes=budget
            )
            assert chunk, "a page always holds at least one item"
            assert len(chunk) == 1 or sum(b.size for b in chunk) <= budget
            seen += [b.name for b in chunk]
            if not token:
                break
        assert seen == [name for _, name in items]
