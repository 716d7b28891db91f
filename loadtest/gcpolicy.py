"""Keep the cyclic garbage collector's full collections short while callers speak.

With ~100 connected callers one tester process holds millions of tracked objects (aiortc transports,
their RTP/RTCP state, pymediasoup handlers). A full (generation 2) collection walks all of them:
measured 107-175 ms per collection at 50-100 callers, every packet of every caller late by that
much. A connected call's objects live as long as the call, so once a caller is connected they are
moved out of the collector's reach (``gc.freeze``): later full collections walk only what was
allocated since. Reference counting still frees frozen objects that are not in cycles; frozen cycles
(rare: a closed transport's) are kept until the process ends -- the price of bounded pauses, which
``bench/soak.py`` measures as the RSS slope.
"""

from __future__ import annotations

import gc


def settle_connected() -> None:
    """A caller finished connecting: what exists now lives long; take it out of full collections."""
    gc.freeze()
    # CPython runs a full collection only once the objects promoted since the last one exceed a quarter
    # of the long-lived count it measured then, and freezing does not update that count: without a
    # collection now, the stale (large) count postpones every later full collection, and garbage
    # cycles that reached the oldest generation pile up (measured: RSS +267 MB/hour over a 30-minute
    # soak). Right after the freeze the collection has nothing to walk: it only resets the count.
    gc.collect()
