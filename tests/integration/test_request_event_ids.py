"""``gateway.request`` event ids are stable per recorded request, through a real broker.

Telemetry dedupes by event id. A batch that ``publish_queued`` sends again after a partial Kafka failure must carry
the ids of its first send, and two requests that share a client-chosen ``X-Request-Id`` must still count twice.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from services.gateway.platform import PluginIdentity
from services.gateway.request_events import RequestEventsPublisher
from shared.engines import EmbeddedKafka
from shared.events.topics import GATEWAY_REQUESTS
from shared.testing.kafka import as_event, read_topic

SKETCHUP = PluginIdentity("sketchup", "1.4.2")


async def test_a_batch_sent_again_keeps_its_event_ids(own_broker: EmbeddedKafka) -> None:
    publisher = RequestEventsPublisher(own_broker.bootstrap)
    reused = f"client-chosen-{uuid.uuid4().hex[:8]}"  # a plugin that sends its own X-Request-Id, twice
    publisher.record(reused, "GET", "/api/plugins/renders/{id}", 200, 12.5, SKETCHUP, "user-1", None)
    publisher.record(reused, "GET", "/api/plugins/renders/{id}", 404, 3.25, SKETCHUP, "user-1", "NOT_FOUND")
    publisher.record(str(uuid.uuid4()), "POST", "/api/plugins/renders", 202, 40.0, SKETCHUP, None, None)
    queued = list(publisher._queue)
    try:
        assert await publisher.publish_queued() == 3
        # What a retry after a partial failure does: the items still queued are turned into events and sent again.
        publisher._queue.extend(queued)
        assert await publisher.publish_queued() == 3
    finally:
        await publisher.close()

    events = [as_event(r) for r in await read_topic(own_broker.bootstrap, GATEWAY_REQUESTS, 6)]
    assert len(events) == 6
    ids: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    for event in events:
        assert event.type == "gateway.request"
        ids[(event.data["requestId"], event.data["status"])].add(event.id)
    assert len(ids) == 3
    assert all(len(sent) == 1 for sent in ids.values()), f"a request sent twice got two event ids: {dict(ids)}"
    assert ids[(reused, 200)] != ids[(reused, 404)], "two requests with one X-Request-Id are two events"
    assert len({event.id for event in events}) == 3
