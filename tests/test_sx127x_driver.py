"""The portable SX127x driver against the register-level SX1276 model, in virtual time.

Every radio is a ``SX1276Model`` on one ``RadioChannel``; each driver runs in its own participant
thread of the ``VirtualClock`` with ``drivers.ticks`` bound to it, exactly as firmware on a board
would block in ``time.sleep_ms``.
"""

import pytest

from drivers import ticks
from drivers.sx127x import RadioError, SX127x
from protocol.airtime import symbol_time_us, time_on_air_us
from sim.bus import SimPin, SimSPI
from sim.channel import Concentrator, RadioChannel
from sim.clock import VirtualClock
from sim.sx1276 import SX1276Model


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def channel(clock):
    return RadioChannel(clock, seed=11)


def on_board(clock, name, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a participant thread living in virtual time; returns a box
    that holds its ``result`` once it has finished."""
    box = {}

    def target():
        ticks.bind(box["participant"])
        try:
            box["result"] = fn(*args, **kwargs)
        finally:
            ticks.bind(None)

    box["participant"] = clock.spawn(name, target)
    return box


def driver_for(model, dio0=True, **kw):
    spi, cs = model.wire()
    return SX127x(spi, cs, reset=model.reset, dio0=model.dio0 if dio0 else None, **kw)


def radio(clock, channel, name, position):
    return SX1276Model(clock, channel, position, name=name)


def test_one_radio_sends_and_the_other_receives_with_plausible_rssi_and_snr(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (400, 0))

    def sender():
        r = driver_for(a)
        ticks.sleep_ms(100)
        return r.send(b"hello city"), r.tx_count

    def receiver():
        r = driver_for(b)
        return r.receive(3_000), r.rx_count

    tx = on_board(clock, "a", sender)
    rx = on_board(clock, "b", receiver)
    clock.run(until_us=5_000_000)
    toa, sent = tx["result"]
    (payload, rssi, snr), received = rx["result"]
    assert (toa, sent, received) == (time_on_air_us(10, 7), 1, 1)
    assert payload == b"hello city"
    expected_rssi, expected_snr = channel.link_budget(a.last_tx, b)
    assert expected_rssi == pytest.approx(14 - 31.2 - 29 * 2.602, abs=0.1)  # log-distance, 400 m
    assert rssi == pytest.approx(expected_rssi, abs=1.0)
    assert snr == pytest.approx(expected_snr, abs=0.25)
    assert a.tx_count == 1 and b.rx_ok == 1


def test_a_weak_packet_reports_negative_snr_and_corrected_rssi(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (9_000, 0))

    def sender():
        r = driver_for(a, sf=12)
        ticks.sleep_ms(100)
        r.send(b"far away")

    rx = on_board(clock, "b", lambda: driver_for(b, sf=12).receive(10_000))
    on_board(clock, "a", sender)
    clock.run(until_us=12_000_000)
    payload, rssi, snr = rx["result"]
    expected_rssi, expected_snr = channel.link_budget(a.last_tx, b)
    assert payload == b"far away" and snr < 0
    assert snr == pytest.approx(expected_snr, abs=0.25)
    assert rssi == pytest.approx(expected_rssi, abs=1.0)
    assert b.reg(0x26) & 0x08 and a.reg(0x26) & 0x08  # LowDataRateOptimize set for SF12/125


def test_receive_times_out_with_rxsingle_after_the_requested_time(clock, channel):
    b = radio(clock, channel, "b", (0, 0))

    def receiver():
        r = driver_for(b)
        t0 = clock.now_us()
        result = r.receive(100)
        return result, clock.now_us() - t0, r.rx_timeouts

    box = on_board(clock, "b", receiver)
    clock.run(until_us=2_000_000)
    result, waited_us, timeouts = box["result"]
    assert result is None and timeouts == 1
    assert b.rx_timeouts == 1  # the chip's own RxTimeout: RXSINGLE was used
    assert 100_000 <= waited_us <= 100_000 + symbol_time_us(7) + 2_000
    assert b.mode_name == "LoRa STDBY"


def test_a_long_receive_uses_rxcontinuous_with_a_software_deadline(clock, channel):
    b = radio(clock, channel, "b", (0, 0))

    def receiver():
        r = driver_for(b)
        t0 = clock.now_us()
        return r.receive(5_000), clock.now_us() - t0

    box = on_board(clock, "b", receiver)
    clock.run(until_us=10_000_000)
    result, waited_us = box["result"]
    assert result is None and 5_000_000 <= waited_us <= 5_010_000
    assert b.rx_timeouts == 0 and b.mode_name == "LoRa STDBY"


def test_a_packet_starting_at_the_end_of_the_window_is_still_received(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))
    ready = {}

    def receiver():
        r = driver_for(b)
        ready["t"] = clock.now_us()
        return r.receive(20)  # 20 symbols at SF7

    def sender():
        r = driver_for(a)
        ticks.sleep_ms(18)  # both finish their init at ~7 ms; the window lasts 20.48 ms
        r.send(b"just in time")

    rx = on_board(clock, "b", receiver)
    on_board(clock, "a", sender)
    clock.run(until_us=2_000_000)
    window_end = ready["t"] + 20 * symbol_time_us(7)
    assert window_end - 3 * symbol_time_us(7) < a.last_tx.start_us < window_end < a.last_tx.end_us
    assert rx["result"][0] == b"just in time"


def test_crc_errors_are_counted_and_not_returned(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))
    channel.corrupt_next(1, receiver="b")

    def sender():
        r = driver_for(a)
        ticks.sleep_ms(50)
        r.send(b"damaged")
        ticks.sleep_ms(50)
        r.send(b"intact")

    def receiver():
        r = driver_for(b)
        return r.receive(3_000), r.crc_errors, r.rx_count

    rx = on_board(clock, "b", receiver)
    on_board(clock, "a", sender)
    clock.run(until_us=5_000_000)
    pkt, crc_errors, count = rx["result"]
    assert pkt[0] == b"intact" and crc_errors == 1 and count == 1
    assert b.crc_errors == 1


def test_rxsingle_with_a_crc_error_returns_none(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))
    channel.corrupt_next(1)

    def sender():
        r = driver_for(a)
        ticks.sleep_ms(20)
        r.send(b"damaged")

    def receiver():
        r = driver_for(b)
        return r.receive(200), r.crc_errors

    rx = on_board(clock, "b", receiver)
    on_board(clock, "a", sender)
    clock.run(until_us=2_000_000)
    assert rx["result"] == (None, 1)


@pytest.mark.parametrize(
    ("tx_settings", "rx_settings"),
    [
        ({"sf": 8}, {"sf": 7}),
        ({"invert_iq_tx": True}, {}),
        ({}, {"invert_iq_rx": True}),
        ({"sync_word": 0x12}, {"sync_word": 0x34}),
        ({"freq_hz": 868_300_000}, {"freq_hz": 868_100_000}),
        ({"bw_hz": 250_000}, {"bw_hz": 125_000}),
    ],
    ids=["sf", "iq-tx", "iq-rx", "sync-word", "frequency", "bandwidth"],
)
def test_mismatched_settings_are_not_received(clock, channel, tx_settings, rx_settings):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))

    def sender():
        r = driver_for(a, **tx_settings)
        ticks.sleep_ms(50)
        r.send(b"not for you")

    rx = on_board(clock, "b", lambda: driver_for(b, **rx_settings).receive(500))
    on_board(clock, "a", sender)
    clock.run(until_us=2_000_000)
    assert rx["result"] is None and b.rx_ok == 0 and a.tx_count == 1


def test_lorawan_iq_convention_between_a_gateway_radio_and_a_node(clock, channel):
    gw = radio(clock, channel, "gw", (0, 0))
    node = radio(clock, channel, "node", (300, 0))

    def gateway():
        r = driver_for(gw, invert_iq_tx=True)  # receives uplinks normally, sends inverted
        up = r.receive(2_000)
        r.send(b"downlink:" + up[0])
        return up[0], (gw.reg(0x33), gw.reg(0x3B))

    def end_device():
        r = driver_for(node, invert_iq_rx=True)  # sends normally, receives inverted
        ticks.sleep_ms(20)
        r.send(b"up")
        return r.receive(1_000), (node.reg(0x33), node.reg(0x3B))

    g = on_board(clock, "gw", gateway)
    n = on_board(clock, "node", end_device)
    clock.run(until_us=5_000_000)
    up, gw_iq = g["result"]
    down, node_iq = n["result"]
    assert up == b"up" and down[0] == b"downlink:up"
    assert gw_iq == (0x26, 0x19)  # RegInvertIQ/RegInvertIQ2 after an inverted transmission
    assert node_iq == (0x67, 0x19)  # ... after an inverted reception


def test_continuous_reception_with_poll_and_an_on_rx_handler(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))
    handled = []

    def receiver():
        r = driver_for(b)
        r.on_rx(lambda payload, rssi, snr: handled.append(payload))
        r.start_receive()
        polled = []
        for _ in range(600):
            pkt = r.poll()
            if pkt is not None:
                polled.append(pkt[0])
            ticks.sleep_ms(1)
        return polled

    def sender():
        r = driver_for(a)
        for i in range(3):
            ticks.sleep_ms(30)
            r.send(b"packet %d" % i)

    rx = on_board(clock, "b", receiver)
    on_board(clock, "a", sender)
    clock.run(until_us=2_000_000)
    expected = [b"packet 0", b"packet 1", b"packet 2"]
    assert rx["result"] == expected and handled == expected
    assert b.mode_name == "LoRa RXCONTINUOUS"


def test_poll_without_dio0_reads_the_flags_over_spi(clock, channel):
    a = radio(clock, channel, "a", (0, 0))
    b = radio(clock, channel, "b", (300, 0))

    def receiver():
        r = driver_for(b, dio0=False)
        r.start_receive()
        while True:
            pkt = r.poll()
            if pkt is not None:
                return pkt[0]
            ticks.sleep_ms(2)

    def sender():
        r = driver_for(a, dio0=False)
        ticks.sleep_ms(40)
        return r.send(b"polled")

    rx = on_board(clock, "b", receiver)
    tx = on_board(clock, "a", sender)
    clock.run(until_us=1_000_000)
    assert rx["result"] == b"polled" and tx["result"] == time_on_air_us(6, 7)


def test_the_dio0_interrupt_only_sets_a_flag(clock, channel):
    b = radio(clock, channel, "b", (0, 0))
    box = on_board(clock, "b", driver_for, b)
    clock.run(until_us=100_000)
    r = box["result"]
    before = b.spi_transactions
    r._isr(b.dio0)
    assert r._irq is True and b.spi_transactions == before


def test_uplink_from_the_driver_reaches_the_concentrator(clock, channel):
    node = radio(clock, channel, "node", (1_500, 0))
    got = []
    Concentrator(clock, channel, (0, 0), on_uplink=got.append)

    def end_device():
        r = driver_for(node, sf=9, freq_hz=868_500_000)
        ticks.sleep_ms(10)
        r.send(b"\x40uplink")

    on_board(clock, "node", end_device)
    clock.run(until_us=2_000_000)
    [pkt] = got
    assert (pkt.payload, pkt.freq_hz, pkt.sf, pkt.crc_ok) == (b"\x40uplink", 868_500_000, 9, True)


def test_concentrator_downlink_reaches_the_driver_in_its_rx1_window(clock, channel):
    node = radio(clock, channel, "node", (800, 0))
    gw = Concentrator(clock, channel, (0, 0))
    gw.on_uplink = lambda p: gw.send_at(p.tmst_us + 1_000_000, p.freq_hz, p.sf, p.bw_khz, b"ack")

    def end_device():
        r = driver_for(node, invert_iq_rx=True)
        r.send(b"confirmed uplink")
        ticks.sleep_ms(990)  # RX1 opens 1 s after the end of the uplink, with a little margin
        r.set_crc(False)  # LoRaWAN downlinks carry no payload CRC
        return r.receive(30)

    box = on_board(clock, "node", end_device)
    clock.run(until_us=3_000_000)
    assert box["result"][0] == b"ack"


def test_registers_match_the_requested_configuration(clock, channel):
    m = radio(clock, channel, "m", (0, 0))
    box = on_board(
        clock, "m", driver_for, m, freq_hz=869_525_000, sf=10, bw_hz=250_000, cr=4,
        sync_word=0x12, preamble=12, crc=False, lna_gain=3,
    )  # fmt: skip
    clock.run(until_us=100_000)
    assert box["result"] is not None
    assert m.lora and m.mode_name == "LoRa STDBY"
    assert m.freq_hz == pytest.approx(869_525_000, abs=61)  # Frf resolution 61 Hz
    assert (m.sf, m.bw_hz, m.cr, m.crc_on, m.preamble, m.sync_word) == (
        10, 250_000, 4, False, 12, 0x12
    )  # fmt: skip
    assert not m.ldro  # SF10/250 kHz: 4 ms symbols
    assert m.reg(0x0C) == (3 << 5) | 0x03 and not m.reg(0x26) & 0x04  # fixed G3, AGC off
    assert m.tx_power_dbm == 14 and m.reg(0x09) == 0xFC and m.reg(0x0B) == 0x2B


@pytest.mark.parametrize(
    ("dbm", "pa_boost", "pa_config", "pa_dac", "ocp"),
    [
        (2, True, 0xF0, 0x84, 0x2B),
        (17, True, 0xFF, 0x84, 0x2B),
        (20, True, 0xFF, 0x87, 0x31),
        (14, False, 0x7E, 0x84, 0x2B),
        (-4, False, 0x00, 0x84, 0x2B),
    ],
)
def test_tx_power_settings_reach_the_requested_output(
    clock, channel, dbm, pa_boost, pa_config, pa_dac, ocp
):
    m = radio(clock, channel, "m", (0, 0))
    on_board(clock, "m", driver_for, m, tx_power_dbm=dbm, pa_boost=pa_boost)
    clock.run(until_us=100_000)
    assert (m.reg(0x09), m.reg(0x4D), m.reg(0x0B)) == (pa_config, pa_dac, ocp)
    assert m.tx_power_dbm == pytest.approx(dbm, abs=0.25)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sf": 6}, "SF6 only works in implicit header mode"),
        ({"bw_hz": 100_000}, "bandwidth 100000 Hz is not one of"),
        ({"tx_power_dbm": 21}, "PA_BOOST output power 21 dBm"),
        ({"tx_power_dbm": 16, "pa_boost": False}, "RFO output power 16 dBm"),
        ({"freq_hz": 2_400_000_000}, "out of the SX127x range"),
    ],
)
def test_impossible_settings_are_rejected(clock, channel, settings, message):
    m = radio(clock, channel, "m", (0, 0))

    def build():
        with pytest.raises(ValueError, match=message):
            driver_for(m, **settings)
        return True

    box = on_board(clock, "m", build)
    clock.run(until_us=100_000)
    assert box["result"] is True


def test_no_chip_on_the_bus_raises_a_radio_error_naming_the_value_read(clock):
    spi, cs = SimSPI(), SimPin("nss", SimPin.OUT, 1)  # nothing attached: MISO floats high

    def build():
        with pytest.raises(RadioError, match=r"no SX127x on the SPI bus \(RegVersion 0xFF"):
            SX127x(spi, cs, reset=SimPin("rst", SimPin.OUT, 1))
        return True

    box = on_board(clock, "board", build)
    clock.run(until_us=100_000)
    assert box["result"] is True


def test_a_chip_held_in_reset_is_reported_not_found(clock, channel):
    m = radio(clock, channel, "m", (0, 0))
    spi, cs = m.wire()
    m.reset.drive(0)  # e.g. NRESET shorted to ground

    def build():
        with pytest.raises(RadioError, match=r"RegVersion 0x00"):
            SX127x(spi, cs)
        return True

    box = on_board(clock, "board", build)
    clock.run(until_us=100_000)
    assert box["result"] is True


def test_send_raises_when_tx_done_never_comes(clock, channel):
    class DeadPA(SX1276Model):
        def _start_tx(self):  # the chip accepts TX mode but nothing ever finishes
            pass

    m = DeadPA(clock, channel, (0, 0), name="dead")

    def run():
        r = driver_for(m)
        with pytest.raises(RadioError, match="no TxDone"):
            r.send(b"x")
        return m.mode_name

    box = on_board(clock, "dead", run)
    clock.run(until_us=2_000_000)
    assert box["result"] == "LoRa STDBY"


def test_payload_size_is_checked_before_touching_the_radio(clock, channel):
    m = radio(clock, channel, "m", (0, 0))

    def run():
        r = driver_for(m)
        for bad in (b"", bytes(256)):
            with pytest.raises(ValueError, match="1..255 bytes"):
                r.send(bad)
        return m.tx_count

    box = on_board(clock, "m", run)
    clock.run(until_us=100_000)
    assert box["result"] == 0


def test_sleep_and_standby_set_the_chip_modes(clock, channel):
    m = radio(clock, channel, "m", (0, 0))

    def run():
        r = driver_for(m)
        r.sleep()
        slept = m.mode_name
        r.standby()
        return slept, m.mode_name

    box = on_board(clock, "m", run)
    clock.run(until_us=100_000)
    assert box["result"] == ("LoRa SLEEP", "LoRa STDBY")


def test_ticks_fall_back_to_the_host_clock_outside_the_simulation():
    t0 = ticks.ticks_ms()
    ticks.sleep_ms(2)
    assert 1 <= ticks.ticks_diff(ticks.ticks_ms(), t0) < 1_000
    assert ticks.ticks_diff(ticks.ticks_add(5, -10), 5) == -10
    assert ticks.ticks_add((1 << 30) - 1, 1) == 0


def test_a_window_given_in_symbols_closes_by_rx_timeout_while_the_mcu_naps_through_it(
        clock, channel):
    b = radio(clock, channel, "b", (0, 0))
    naps = []

    def receiver():
        r = driver_for(b, sf=12)
        r.nap = lambda ms: (naps.append(ms), ticks.sleep_ms(ms))
        t0 = clock.now_us()
        return r.receive(1_000, symbols=6), clock.now_us() - t0, b.reg(0x1F)

    rx = on_board(clock, "b", receiver)
    clock.run(until_us=2_000_000)
    result, waited_us, symb_timeout = rx["result"]
    window_us = 6 * symbol_time_us(12)
    assert result is None and symb_timeout == 6 and b.rx_timeouts == 1
    assert naps == [(window_us + 999) // 1000]  # one nap for the window, not 1 ms polls
    assert window_us <= waited_us <= window_us + 2_000
