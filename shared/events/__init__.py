"""Event contracts: the CloudEvent envelope, topic names and versioned payload models."""

from shared.events.contracts import EVENT_TYPES, EventData, parse_data
from shared.events.envelope import CloudEvent
from shared.events.topics import all_topics, dlq

__all__ = ["EVENT_TYPES", "CloudEvent", "EventData", "all_topics", "dlq", "parse_data"]
