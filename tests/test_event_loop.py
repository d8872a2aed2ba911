"""``[gateway] event_loop``: read and written back, the loop it names, and the broker link on
uvloop (paho's sockets through ``add_reader``/``add_writer``) when uvloop is installed."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, default_config, load_config, write_config
from gateway.keys import SigningKey
from gateway.service import EventLoopError, event_loop_factory, run_on_loop
from gateway.uplink.mqtt import Publisher
from tests.fixtures.mosquitto import Broker
from tests.test_forwarder import fast_forwarder, make_store, mqtt_config, uplinks

GW = "b827ebfffe123456"
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_event_loop_defaults_to_asyncio_and_is_written_back(tmp_path: Path) -> None:
    config = default_config(GW, tmp_path / "data")
    assert config.gateway.event_loop == "asyncio"
    path = tmp_path / "gateway.toml"
    write_config(path, config)
    text = path.read_text().replace('event_loop = "asyncio"', 'event_loop = "uvloop"')
    path.write_text(text)
    assert load_config(path).gateway.event_loop == "uvloop"


def test_an_unknown_event_loop_lists_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    write_config(path, default_config(GW, tmp_path / "data"))
    path.write_text(path.read_text().replace('event_loop = "asyncio"', 'event_loop = "trio"'))
    with pytest.raises(ConfigError, match="gateway.event_loop.*asyncio.*uvloop.*auto"):
        load_config(path)


def test_asyncio_is_python_s_own_loop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_on_loop(loop_module(), "asyncio").startswith("asyncio")


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(EventLoopError, match="pip install uvloop"):
        event_loop_factory("uvloop")
    assert event_loop_factory("auto") is asyncio.new_event_loop  # auto falls back quietly


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (optional)")
def test_records_are_published_and_deleted_after_puback_on_uvloop(
        mosquitto: Broker, tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert all(store.accept_uplinks(uplinks(range(1, 41))))
    key = SigningKey.generate()

    async def main() -> tuple[str, int]:
        forwarder = fast_forwarder(store, Publisher(mqtt_config(mosquitto), key, store), key)
        task = asyncio.create_task(forwarder.run())
        try:
            async with asyncio.timeout(30):
                while store.count() > 0:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # cancelled on purpose
        return type(asyncio.get_running_loop()).__module__, forwarder.stats.published

    module, published = run_on_loop(main(), "uvloop")
    store.close()
    assert module.startswith("uvloop")
    assert published == 120
