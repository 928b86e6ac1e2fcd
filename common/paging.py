"""Pages of a listing: a stable order, an opaque token, a bounded page.

A listing is sorted by a key that never changes for an item (e.g. its creation time
and id); the token of the next page is the key of the last item returned, so pages
stay consistent while items come and go between calls. A page is bounded by its
number of items and, with `rendered_page`, by the bytes of its rendered items, so a
reply always fits one gRPC message however large the items are. Knows nothing of
what is listed.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from common.errors import InvalidArgument
from common.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES

T = TypeVar("T")
Key = tuple[Any, ...]


class Sized(Protocol):
    """A rendered item: a protocol message knows its encoded size."""

    def ByteSize(self) -> int: ...


R = TypeVar("R", bound=Sized)


def encode_token(key: Key) -> str:
    """The opaque token that resumes a listing after key."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_token(token: str) -> Key:
    """The key a token resumes after; InvalidArgument for anything not made here."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this server gave out") from None
    if not isinstance(key, list):
        raise InvalidArgument("page_token is not one this server gave out")
    return tuple(key)


def page(items: Iterable[T], key: Callable[[T], Key], size: int, token: str) -> tuple[list[T], str]:
    """One page of items in key order after token, and the token of the next page
    ("" when this is the last)."""
    ordered = sorted(items, key=key)
    start = 0
    if token:
        after = decode_token(token)
        keys = [key(item) for item in ordered]
        try:
            start = bisect.bisect_right(keys, after)
        except TypeError:
            raise InvalidArgument("page_token does not belong to this listing") from None
    size = size or DEFAULT_PAGE_SIZE
    chunk = ordered[start : start + size]
    more = start + size < len(ordered)
    return chunk, encode_token(key(chunk[-1])) if more and chunk else ""


def rendered_page(
    items: Iterable[T],
    key: Callable[[T], Key],
    size: int,
    token: str,
    render: Callable[[T], R],
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[R], str]:
    """`page`, rendered, and cut short where the rendered items would pass max_bytes
    (never below one item); the token then resumes after the last item kept."""
    chunk, next_token = page(items, key, size, token)
    rendered: list[R] = []
    total = 0
    for item in chunk:
        message = render(item)
        total += message.ByteSize()
        if rendered and total > max_bytes:
            return rendered, encode_token(key(chunk[len(rendered) - 1]))
        rendered.append(message)
    return rendered, next_token
