"""Event contracts: the CloudEvent envelope, topic names and versioned payload models."""

from shared.events.contracts import EVENT_TYPES, EventData, parse_data
from shared.events.envelope import CloudEvent
from shared.events.topics import all_topics, dead_letter_topic

__all__ = ["EVENT_TYPES", "CloudEvent", "EventData", "all_topics", "dead_letter_topic", "parse_data"]
