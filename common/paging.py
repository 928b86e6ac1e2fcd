"""Pages of a listing: a stable order, an opaque token, a bounded page.

A listing is sorted by a key that never changes for an item (e.g. its creation time
and id); the token of the next page is the key of the last item returned, so pages
stay consistent while items come and go between calls. Knows nothing of what is
listed.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from common.errors import InvalidArgument
from common.limits import DEFAULT_PAGE_SIZE

T = TypeVar("T")
Key = tuple[Any, ...]


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
