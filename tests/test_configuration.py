"""The suite must really run on the services it claims: these fail on a misconfiguration."""

import os

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.storage import storages
from django.db import connection

from tests.conftest import SERVICES


@pytest.mark.django_db
def test_database_is_the_configured_one():
    if SERVICES:
        assert connection.vendor == "postgresql"
    else:
        assert connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] >= 30_000


def test_storages_are_the_configured_ones():
    expected = "S3Storage" if SERVICES else "FileSystemStorage"
    for alias in ("default", "blobs", "exports"):
        assert type(storages[alias]).__name__ == expected


def test_channel_layer_delivers_a_message():
    layer = get_channel_layer()
    expected = "RedisChannelLayer" if SERVICES else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected

    async def round_trip():
        channel = await layer.new_channel()
        await layer.group_add("ferry-config-test", channel)
        await layer.group_send("ferry-config-test", {"type": "ping", "n": 1})
        message = await layer.receive(channel)
        await layer.group_discard("ferry-config-test", channel)
        return message

    assert async_to_sync(round_trip)() == {"type": "ping", "n": 1}


@pytest.mark.django_db
def test_task_broker_is_the_configured_one_and_carries_a_task():
    from django_q.brokers import get_broker

    broker = get_broker(list_key="ferry-config-test")
    assert type(broker).__name__ == ("Redis" if SERVICES else "ORM")
    broker.enqueue("payload")
    tasks = broker.dequeue()
    assert [task[1] for task in tasks] in (["payload"], [b"payload"])
    broker.acknowledge(tasks[0][0])
    broker.delete_queue()


def test_the_suite_runs_with_debug_off_and_its_own_key():
    """As deployed; the servers and workers tests start inherit the key (tests/conftest.py)."""
    assert settings.DEBUG is False
    assert settings.SECRET_KEY == os.environ["DJANGO_SECRET_KEY"]
