"""``python -m shared.deadletters``: list, inspect and replay the records a consumer group gave up on.

Every group's dead-letter topic (``<group>.dlq``: ``credits.dlq``, ``webhooks.dlq``, ``telemetry.dlq``,
``render-workers.dlq``, ``gateway.dlq``) holds records exactly as they were (key, headers, value) plus ``x-dlq-*``
headers saying where they came from and why. ``replay`` publishes them to their original topic without those headers;
every consumer dedupes by event id, so a replay reaches only the groups that did not handle the record yet.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import orjson
import typer
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.consumer import DLQ_HEADER_PREFIX
from shared.events.topics import BROADCAST_READERS, CONSUMER_GROUPS, dead_letter_topic
from shared.kafka import make_producer
from shared.settings import ServiceSettings

DEFAULT_BOOTSTRAP = ServiceSettings.model_fields["kafka_bootstrap_servers"].default
app = typer.Typer(add_completion=False, help="Dead letters of the platform's consumer groups.")
READ_SECONDS = 10.0


@dataclass(frozen=True)
class DeadLetter:
    position: str
    """``partition:offset`` in the dead-letter topic: what ``show`` and ``replay`` take."""
    record: ConsumerRecord

    def header(self, name: str) -> str:
        for key, value in self.record.headers:
            if key == name:
                return bytes(value).decode(errors="replace")
        return ""

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, bytes(v)) for k, v in self.record.headers if not k.startswith(DLQ_HEADER_PREFIX)]

    def summary(self) -> str:
        return "  ".join(
            [
                self.position,
                self.header(f"{DLQ_HEADER_PREFIX}time")[:19],
                self.header(f"{DLQ_HEADER_PREFIX}topic"),
                self.header("ce_type") or "-",
                self.header("ce_id") or "-",
                f"attempts={self.header(f'{DLQ_HEADER_PREFIX}attempts')}",
                self.header(f"{DLQ_HEADER_PREFIX}error")[:120],
            ]
        )


def bootstrap() -> str:
    """``KAFKA_BOOTSTRAP_SERVERS``, as every process reads it."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP


async def read_dead_letters(bootstrap_servers: str, group: str) -> list[DeadLetter]:
    """Every record of the group's dead-letter topic, oldest first per partition."""
    topic = dead_letter_topic(group)
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await reader.start()
    letters: list[DeadLetter] = []
    try:
        await reader.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=300)
            for records in batch.values():
                letters += [DeadLetter(f"{r.partition}:{r.offset}", r) for r in records]
            ends = [reader.highwater(tp) for tp in partitions]
            if all(end is not None for end in ends):
                positions = [await reader.position(tp) for tp in partitions]
                if all(pos >= (end or 0) for pos, end in zip(positions, ends, strict=True)):
                    break
    finally:
        await reader.stop()
    return letters


async def replay_letters(bootstrap_servers: str, letters: list[DeadLetter]) -> int:
    """Publish each letter to its original topic, as it was first published; returns how many."""
    producer = make_producer(bootstrap_servers, client_id="dead-letter-replay")
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(
                letter.header(f"{DLQ_HEADER_PREFIX}topic"),
                value=letter.record.value,
                key=letter.record.key,
                headers=letter.original_headers,
            )
    finally:
        await producer.stop()
    return len(letters)


def _groups(group: str | None) -> list[str]:
    return [group] if group else [*CONSUMER_GROUPS, *BROADCAST_READERS]


@app.command("list")
def list_letters(group: str | None = typer.Argument(None, help="a group; all groups when omitted")) -> None:
    """One line per dead letter: position, when, original topic, event type and id, attempts, error."""
    for name in _groups(group):
        letters = asyncio.run(read_dead_letters(bootstrap(), name))
        typer.echo(f"{dead_letter_topic(name)}: {len(letters)}")
        for letter in letters:
            typer.echo("  " + letter.summary())


@app.command()
def show(group: str, position: str = typer.Argument(..., help="partition:offset, as `list` prints it")) -> None:
    """One dead letter whole: every header and the value (pretty-printed when it is JSON)."""
    letter = _find(group, [position])[0]
    for key, value in letter.record.headers:
        typer.echo(f"{key}: {bytes(value).decode(errors='replace')}")
    typer.echo(f"key: {(letter.record.key or b'').decode(errors='replace')}")
    try:
        typer.echo(orjson.dumps(orjson.loads(letter.record.value or b"null"), option=orjson.OPT_INDENT_2).decode())
    except orjson.JSONDecodeError:
        typer.echo(repr(letter.record.value))


@app.command()
def replay(
    group: str,
    positions: list[str] = typer.Argument(None, help="partition:offset ... (see `list`)"),
    every: bool = typer.Option(False, "--all", help="replay every dead letter of the group"),
) -> None:
    """Publish dead letters to their original topic again (consumers dedupe by event id)."""
    if not positions and not every:
        raise typer.BadParameter("name positions, or pass --all")
    letters = asyncio.run(read_dead_letters(bootstrap(), group)) if every else _find(group, positions)
    count = asyncio.run(replay_letters(bootstrap(), letters))
    typer.echo(f"replayed {count} record(s) of {dead_letter_topic(group)}")


def _find(group: str, positions: list[str]) -> list[DeadLetter]:
    letters = {letter.position: letter for letter in asyncio.run(read_dead_letters(bootstrap(), group))}
    missing = [p for p in positions if p not in letters]
    if missing:
        raise typer.BadParameter(f"no dead letter at {', '.join(missing)} in {dead_letter_topic(group)}")
    return [letters[p] for p in positions]


if __name__ == "__main__":
    app()
