"""ponykit.outbox's public names, and that importing ponykit needs none of the broker clients."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ponykit.outbox

SRC = Path(__file__).resolve().parents[2] / "src"

PUBLISHERS = (
    "CeleryPublisher",
    "InMemoryPublisher",
    "RabbitMQPublisher",
    "RedisStreamPublisher",
    "publisher_from_url",
)


def test_the_publishers_are_exported() -> None:
    for name in PUBLISHERS:
        assert name in ponykit.outbox.__all__
        assert getattr(ponykit.outbox, name).__doc__


def test_importing_ponykit_needs_no_broker_client() -> None:
    # A finder that refuses pika, redis, celery and kombu: as on a machine without the extras.
    script = textwrap.dedent(
        """
        import sys

        BLOCKED = ("pika", "redis", "celery", "kombu")

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Refuse())
        import ponykit
        from ponykit.outbox import (
            CeleryPublisher, InMemoryPublisher, RabbitMQPublisher, RedisStreamPublisher, publisher_from_url,
        )
        from ponykit.errors import ConfigurationError

        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        assert publisher_from_url("memory://").name
        for make in (lambda: RabbitMQPublisher("amqp://localhost"), lambda: publisher_from_url("redis://x")):
            try:
                make()
            except ConfigurationError as exc:
                assert "pip install 'ponykit[" in str(exc), exc
            else:
                raise AssertionError("a publisher was made without its client library")
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
