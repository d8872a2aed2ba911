"""A command the network sends again is answered again, never run twice (firmware/app.py).

A gateway resends a confirmed downlink when the node's LoRaWAN ACK was lost: a new frame (new
FCntDown) with the same command and seq. The node remembers the last command it ran and its result
with its persistent state (firmware/state.py, on flash), so the repeat gets the same answer on
FPort 30, across a commanded reboot and a power cut too, while a new command still runs.

The real firmware in the real MicroPython VM, a Class C stand-in role that logs each command it
runs, the minimal network side of tests/test_firmware_node.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.district import District
from tests import test_firmware_node
from tests.test_firmware_node import Network, _node, abp_config, command

pytestmark = pytest.mark.vm
district = test_firmware_node.district  # the fixture: a district of its own per test

COUNTING_ROLE = '''
class LightingRole:
    name = "lighting"
    device_class = "C"

    def __init__(self, hw, settings):
        self.level = 100
        self.faults = ()

    def read(self):
        return {"level": self.level, "relay": True}

    def command(self, cmd):
        print("ROLE ran", cmd["cmd"], cmd["seq"], cmd.get("level"))
        self.level = cmd["level"]
        return "done"

    def poll(self):
        return 5000
'''


def test_a_repeated_command_is_answered_again_without_running_twice(
        district: District, tmp_path: Path) -> None:
    devaddr, nwk, app = 0x260B5555, bytes(range(9, 25)), bytes(range(10, 26))
    dev_eui = bytes.fromhex("0004a30b001c0536")
    net = Network(district, dev_eui, abp=(devaddr, nwk, app))
    node = _node(district, tmp_path, abp_config(dev_eui.hex(), devaddr, nwk, app,
                                                role="lighting"), COUNTING_ROLE)
    node.board.start()
    node.run_until(lambda: len(net.of_port(13)) >= 1, limit_s=60)
    dim = command({"cmd": "dim", "seq": 21, "level": 40})
    reboot = command({"cmd": "reboot", "seq": 22})
    t0 = net.of_port(13)[0]["t"]
    net.class_c(t0 + 10_000_000, {"payload": dim, "confirmed": True})
    net.class_c(t0 + 20_000_000, {"payload": dim, "confirmed": True})  # our ACK got lost
    net.class_c(t0 + 30_000_000, {"payload": reboot})
    node.run_until(lambda: len(net.acks()) >= 3 and node.board.boots >= 2, limit_s=120)

    assert net.acks() == [(21, "done"), (21, "done"), (22, "done")]
    assert node.board.output.count("ROLE ran dim 21") == 1, node.board.output
    assert "command seq=21 repeated -> done" in node.board.output
    assert node.board.reset_causes == [1, 2]  # the reboot ran once

    # The reboot's answer is taken for lost as well: resent after a power cut, it is answered
    # from flash and does not reboot the cabinet again; a new command with the same seq runs.
    node.board.power_cut()
    district.clock.run(until_us=district.clock.now_us() + 1000)
    node.board.start()
    n = len(net.of_port(13))
    node.run_until(lambda: len(net.of_port(13)) > n, limit_s=60)
    t1 = net.of_port(13)[-1]["t"]
    net.class_c(t1 + 10_000_000, {"payload": reboot})
    net.class_c(t1 + 20_000_000, {"payload": command({"cmd": "dim", "seq": 22, "level": 10})})
    node.run_until(lambda: len(net.acks()) >= 5, limit_s=120)
    m = len(net.of_port(13))
    node.run_until(lambda: len(net.of_port(13)) > m, limit_s=120)

    assert net.acks()[3:] == [(22, "done"), (22, "done")]
    assert node.board.reset_causes == [1, 2, 1], "the repeated reboot must not reset the node"
    assert node.board.output.count("ROLE ran dim 22 10") == 1
    assert net.of_port(13)[-1]["readings"]["level"] == 10
    assert net.rejected == [] and node.board.crashed is None
