"""The LoRa channel: air time, link budget, sensitivity, collisions and capture, half duplex, and
the gateway's Concentrator front end (uplink metadata, timed downlinks)."""

import math
import threading

import pytest

from protocol.airtime import symbol_time_us, time_on_air_us
from sim.channel import (
    Concentrator,
    Endpoint,
    LogDistancePathLoss,
    RadioChannel,
    RxPacket,
    TooLate,
    TxConflict,
    free_space_loss_db,
    noise_floor_dbm,
)
from sim.clock import VirtualClock

F1, F2 = 868_100_000, 868_300_000


class Radio(Endpoint):
    """A test endpoint: listens for one SF/frequency (or not at all) and records what it gets."""

    def __init__(self, name, position, sf=7, freq=F1, listening=True, iq_inverted=False):
        self.name, self.position = name, position
        self.sf, self.freq, self.listening, self.iq_inverted = sf, freq, listening, iq_inverted
        self.since = 0
        self.got = []

    def listening_since(self, tx):
        if not self.listening or tx.sf != self.sf or tx.iq_inverted != self.iq_inverted:
            return None
        if not RadioChannel.tunes_to(tx, self.freq, 125_000) or tx.sync_word != 0x34:
            return None
        return self.since

    def deliver(self, rx):
        self.got.append(rx)


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def channel(clock):
    return RadioChannel(clock, seed=7)


def send(channel, who, payload=b"0123456789", sf=7, freq=F1, power=14, **kw):
    return channel.transmit(who, payload, freq_hz=freq, sf=sf, tx_power_dbm=power, **kw)


def at(clock, t_us, fn, *args):
    clock.call_at(t_us, fn, *args)


def test_reference_loss_at_one_metre_is_free_space_at_868_mhz():
    assert free_space_loss_db(1.0, 868e6) == pytest.approx(31.2, abs=0.05)
    pl = LogDistancePathLoss(exponent=2.9)
    assert pl(1000.0) == pytest.approx(31.2 + 87.0, abs=0.05)
    assert pl(0.1) == pl(1.0)  # closer than the reference distance counts as 1 m
    assert noise_floor_dbm(125_000) == pytest.approx(-117.03, abs=0.01)


def test_a_packet_occupies_the_air_for_its_time_on_air_and_arrives_at_its_end(clock, channel):
    a = channel.attach(Radio("a", (0, 0)))
    b = channel.attach(Radio("b", (1_000, 0)))
    tx = send(channel, a, b"x" * 13)
    assert tx.end_us - tx.start_us == time_on_air_us(13, 7) == 46_336
    clock.run(until_us=46_335)
    assert b.got == [] and channel.in_air() == [tx]
    clock.run(until_us=46_336)
    [rx] = b.got
    assert rx.end_us == 46_336 and rx.payload == b"x" * 13 and not rx.corrupted
    assert rx.rssi_dbm == pytest.approx(14 - (31.2 + 29 * 3), abs=0.1)
    assert rx.snr_db == pytest.approx(rx.rssi_dbm - noise_floor_dbm(125_000), abs=1e-9)
    assert a.got == []  # the sender does not hear itself
    assert channel.counters("b").delivered == 1 and channel.counters("a").sent == 1


def test_out_of_range_packets_are_lost_but_a_higher_sf_reaches(clock, channel):
    # 8 km, n = 2.9: path loss 144.4 dB -> -130.4 dBm: below SF7 (-123) but above SF12 (-136).
    node = channel.attach(Radio("node", (0, 0)))
    sf7 = channel.attach(Radio("gw7", (8_000, 0), sf=7))
    sf12 = channel.attach(Radio("gw12", (8_000, 0), sf=12))
    send(channel, node, sf=7)
    send(channel, node, sf=12, freq=F2)
    sf12.freq = F2
    clock.run(until_us=5_000_000)
    assert sf7.got == [] and channel.counters("gw7").lost_sensitivity == 1
    assert len(sf12.got) == 1 and sf12.got[0].snr_db < 0
    assert channel.totals.lost_sensitivity == 1 and channel.totals.delivered == 1


def test_snr_limit_decides_for_bandwidths_without_a_sensitivity_table(clock, channel):
    node = channel.attach(Radio("node", (0, 0)))
    near = channel.attach(Radio("near", (2_000, 0)))
    tx = channel.transmit(node, b"narrow", freq_hz=F1, sf=7, bw_hz=62_500)
    rssi, snr = channel.link_budget(tx, near)
    assert channel.detectable(tx, near, rssi, snr) == (snr >= -7.5)


def test_equal_packets_overlapping_in_the_preamble_both_collide(clock, channel):
    a = channel.attach(Radio("a", (-500, 0)))
    b = channel.attach(Radio("b", (500, 0)))
    gw = channel.attach(Radio("gw", (0, 1)))
    send(channel, a, b"from a")
    at(clock, 1_000, send, channel, b, b"from b")  # before a's lock point (3 symbols)
    clock.run(until_us=1_000_000)
    assert gw.got == [] and channel.counters("gw").lost_collision == 2


def test_an_equal_packet_arriving_after_the_lock_destroys_the_first_ones_payload(clock, channel):
    a = channel.attach(Radio("a", (-500, 0)))
    b = channel.attach(Radio("b", (500, 0)))
    gw = channel.attach(Radio("gw", (0, 1)))
    send(channel, a, b"from a")
    at(clock, 10_000, send, channel, b, b"from b")
    clock.run(until_us=1_000_000)
    [rx] = gw.got
    assert rx.tx.sender is a and rx.corrupted  # header decoded, payload destroyed: CRC error
    assert channel.counters("gw").lost_collision == 1


def test_the_stronger_packet_survives_by_capture_when_it_came_first(clock, channel):
    near = channel.attach(Radio("near", (100, 0)))
    far = channel.attach(Radio("far", (2_000, 0)))
    gw = channel.attach(Radio("gw", (0, 0)))
    send(channel, near, b"near")
    at(clock, 5_000, send, channel, far, b"far")
    clock.run(until_us=1_000_000)
    assert [rx.payload for rx in gw.got] == [b"near"]
    assert channel.counters("gw").lost_collision == 1


def test_a_stronger_packet_arriving_before_the_weaker_locks_captures_the_receiver(clock, channel):
    near = channel.attach(Radio("near", (100, 0)))
    far = channel.attach(Radio("far", (2_000, 0)))
    gw = channel.attach(Radio("gw", (0, 0)))
    send(channel, far, b"far")
    # the weak packet's lock point: 8 - 5 = 3 preamble symbols after its start
    at(clock, 2 * symbol_time_us(7), send, channel, near, b"near")
    clock.run(until_us=1_000_000)
    assert [rx.payload for rx in gw.got] == [b"near"]


def test_a_stronger_packet_after_the_weaker_locked_is_lost_and_corrupts_the_weaker(clock, channel):
    near = channel.attach(Radio("near", (100, 0)))
    far = channel.attach(Radio("far", (2_000, 0)))
    gw = channel.attach(Radio("gw", (0, 0)))
    send(channel, far, b"far packet")
    at(clock, 20 * symbol_time_us(7), send, channel, near, b"near")
    clock.run(until_us=1_000_000)
    [rx] = gw.got
    assert rx.tx.sender is far and rx.corrupted and rx.payload != b"far packet"
    c = channel.counters("gw")
    assert (c.delivered, c.corrupted, c.lost_collision) == (0, 1, 1)


def test_different_spreading_factors_and_frequencies_do_not_collide(clock, channel):
    a = channel.attach(Radio("a", (-500, 0)))
    b = channel.attach(Radio("b", (500, 0)))
    c = channel.attach(Radio("c", (500, 10)))
    gw7 = channel.attach(Radio("gw7", (0, 0), sf=7))
    gw9 = channel.attach(Radio("gw9", (0, 0), sf=9))
    gw7b = channel.attach(Radio("gw7b", (0, 0), sf=7, freq=F2))
    send(channel, a, b"sf7", sf=7)
    send(channel, b, b"sf9", sf=9)
    send(channel, c, b"sf7 on 868.3", sf=7, freq=F2)
    clock.run(until_us=1_000_000)
    assert [r.payload for r in gw7.got] == [b"sf7"]
    assert [r.payload for r in gw9.got] == [b"sf9"]
    assert [r.payload for r in gw7b.got] == [b"sf7 on 868.3"]


def test_half_duplex_a_transmitting_endpoint_does_not_receive(clock, channel):
    a = channel.attach(Radio("a", (0, 0)))
    b = channel.attach(Radio("b", (300, 0)))
    send(channel, a, b"long packet from a" * 5)
    at(clock, 50_000, lambda: send(channel, b, b"b talks meanwhile", freq=F2))
    clock.run(until_us=1_000_000)
    assert b.got == []
    assert channel.counters("b").as_dict() == {
        "corrupted": 0, "delivered": 0, "lost_collision": 0, "lost_sensitivity": 0, "sent": 1,
    }  # fmt: skip


def test_a_receiver_that_starts_listening_after_the_lock_point_misses_the_packet(clock, channel):
    a = channel.attach(Radio("a", (0, 0)))
    early = channel.attach(Radio("early", (300, 0)))
    late = channel.attach(Radio("late", (300, 10)))
    tsym = symbol_time_us(7)
    early.since = 3 * tsym  # exactly at the lock point: still catches the last 5 symbols
    late.since = 3 * tsym + 1
    send(channel, a)
    clock.run(until_us=1_000_000)
    assert len(early.got) == 1 and late.got == []


def test_inverted_iq_downlinks_are_not_heard_by_normal_iq_receivers(clock, channel):
    gw = channel.attach(Radio("gw", (0, 0)))
    node = channel.attach(Radio("node", (300, 0), iq_inverted=True))
    send(channel, gw, b"downlink", iq_inverted=True)
    clock.run(until_us=1_000_000)
    assert [r.payload for r in node.got] == [b"downlink"]
    other_gw = channel.attach(Radio("gw2", (10, 0)))
    send(channel, gw, b"downlink 2", iq_inverted=True)
    clock.run(until_us=2_000_000)
    assert other_gw.got == []


def test_shadowing_is_a_fixed_seeded_offset_per_link(clock):
    ch1 = RadioChannel(clock, seed=3, shadowing_sigma_db=8.0)
    ch2 = RadioChannel(clock, seed=3, shadowing_sigma_db=8.0)
    ch3 = RadioChannel(clock, seed=4, shadowing_sigma_db=8.0)
    a, b, c = Radio("a", (0, 0)), Radio("b", (1, 0)), Radio("c", (2, 0))
    s = ch1.shadowing_db(a, b)
    assert s == ch1.shadowing_db(b, a) == ch2.shadowing_db(a, b)
    assert s != ch3.shadowing_db(a, b) and s != ch1.shadowing_db(a, c)
    assert RadioChannel(clock).shadowing_db(a, b) == 0.0


def test_shadowing_spreads_link_budgets_like_a_log_normal_draw(clock):
    ch = RadioChannel(clock, seed=1, shadowing_sigma_db=6.0)
    gw = Radio("gw", (0, 0))
    draws = [ch.shadowing_db(gw, Radio(f"n{i}", (0, 0))) for i in range(2_000)]
    mean = sum(draws) / len(draws)
    sd = math.sqrt(sum((d - mean) ** 2 for d in draws) / len(draws))
    assert abs(mean) < 0.5 and sd == pytest.approx(6.0, rel=0.1)


def test_corrupt_next_injects_payload_errors_for_one_receiver(clock, channel):
    a = channel.attach(Radio("a", (0, 0)))
    b = channel.attach(Radio("b", (300, 0)))
    c = channel.attach(Radio("c", (300, 5)))
    channel.corrupt_next(1, receiver="b")
    send(channel, a, b"payload")
    clock.run(until_us=1_000_000)
    assert b.got[0].corrupted and b.got[0].payload != b"payload"
    assert not c.got[0].corrupted
    send(channel, a, b"payload")
    clock.run(until_us=2_000_000)
    assert not b.got[1].corrupted


def test_aborted_transmissions_are_not_delivered(clock, channel):
    a = channel.attach(Radio("a", (0, 0)))
    b = channel.attach(Radio("b", (300, 0)))
    tx = send(channel, a)
    at(clock, 10_000, channel.abort, tx)
    clock.run(until_us=1_000_000)
    assert b.got == [] and tx.end_us == 10_000


def test_endpoint_names_are_unique_on_a_channel(channel):
    channel.attach(Radio("a", (0, 0)))
    with pytest.raises(ValueError, match="already on the channel"):
        channel.attach(Radio("a", (1, 1)))


# -- the Concentrator ------------------------------------------------------------------------------


@pytest.fixture
def gateway(clock, channel):
    got = []
    gw = Concentrator(clock, channel, (0.0, 0.0), name="gw", on_uplink=got.append)
    gw.got = got
    return gw


def test_concentrator_reports_uplinks_with_semtech_style_metadata(clock, channel, gateway):
    node = channel.attach(Radio("node", (1_000, 0)))
    tx = channel.transmit(node, b"uplink", freq_hz=868_300_024, sf=9, cr=1, tx_power_dbm=14)
    clock.run(until_us=1_000_000)
    [pkt] = gateway.got
    assert isinstance(pkt, RxPacket)
    assert pkt.payload == b"uplink" and pkt.crc_ok
    assert pkt.tmst_us == tx.end_us == time_on_air_us(6, 9)  # end of reception
    assert (pkt.freq_hz, pkt.sf, pkt.bw_khz, pkt.cr) == (868_300_000, 9, 125, 1)
    assert pkt.rssi_dbm == round(14 - (31.2 + 87.0))
    assert pkt.snr_db == round(channel.link_budget(tx, gateway)[1] * 4) / 4
    assert pkt.time_on_air_us == tx.toa_us and gateway.uplinks == 1


def test_concentrator_hears_all_sfs_at_once_on_its_channels_only(clock, channel, gateway):
    nodes = [channel.attach(Radio(f"n{sf}", (200 + sf, 0))) for sf in range(7, 13)]
    for sf, node in zip(range(7, 13), nodes):
        send(channel, node, bytes([sf]), sf=sf)
    off = channel.attach(Radio("off", (100, 0)))
    send(channel, off, b"869.525", freq=869_525_000)
    wide = channel.attach(Radio("wide", (100, 5)))
    channel.transmit(wide, b"250k", freq_hz=F2, sf=7, bw_hz=250_000)
    private = channel.attach(Radio("private", (100, 9)))
    channel.transmit(private, b"0x12", freq_hz=F2, sf=8, sync_word=0x12)
    clock.run(until_us=5_000_000)
    assert sorted(p.sf for p in gateway.got) == [7, 8, 9, 10, 11, 12]


def test_concentrator_marks_corrupted_uplinks_crc_bad(clock, channel, gateway):
    node = channel.attach(Radio("node", (100, 0)))
    channel.corrupt_next(1)
    send(channel, node, b"bad")
    clock.run(until_us=1_000_000)
    assert [p.crc_ok for p in gateway.got] == [False] and gateway.crc_errors == 1


def test_downlink_leaves_at_the_requested_time_with_inverted_iq(clock, channel, gateway):
    node = channel.attach(Radio("node", (500, 0), iq_inverted=True))
    dl = gateway.send_at(1_000_000, F1, 7, 125, b"downlink!")
    assert not dl.sent
    clock.run(until_us=2_000_000)
    assert dl.sent and dl.tx.start_us == 1_000_000 and dl.tx.iq_inverted and not dl.tx.crc
    assert dl.end_us == 1_000_000 + time_on_air_us(9, 7, crc=False)
    assert [r.payload for r in node.got] == [b"downlink!"] and gateway.downlinks_sent == 1


def test_rx1_downlink_one_second_after_the_uplink_tmst(clock, channel, gateway):
    node = channel.attach(Radio("node", (500, 0)))
    gateway.on_uplink = lambda p: (
        gateway.got.append(p),
        gateway.send_at(p.tmst_us + 1_000_000, p.freq_hz, p.sf, p.bw_khz, b"ack"),
    )
    tx = send(channel, node, b"confirmed")
    node.iq_inverted = True
    clock.run(until_us=3_000_000)
    assert [r.payload for r in node.got] == [b"ack"]
    assert node.got[0].tx.start_us == tx.end_us + 1_000_000


def test_a_downlink_for_the_past_raises_too_late(clock, gateway):
    clock.run(until_us=500_000)
    with pytest.raises(TooLate, match="100000 us too late"):
        gateway.send_at(400_000, F1, 7, 125, b"late")
    assert gateway.too_late == 1


def test_overlapping_downlinks_raise_tx_conflict_and_cancel_frees_the_slot(clock, gateway):
    first = gateway.send_at(1_000_000, F1, 12, 125, b"long one")
    with pytest.raises(TxConflict, match="busy"):
        gateway.send_at(1_100_000, F2, 7, 125, b"overlaps")
    first.cancel()
    second = gateway.send_at(1_100_000, F2, 7, 125, b"now fine")
    clock.run(until_us=3_000_000)
    assert not first.sent and second.sent and gateway.downlinks_sent == 1


def test_send_at_can_be_called_from_another_thread(clock, channel, gateway):
    node = channel.attach(Radio("node", (500, 0), iq_inverted=True))
    errors = []

    def worker():
        try:
            gateway.send_at(250_000, F1, 7, 125, b"from a thread")
        except (TooLate, TxConflict, ValueError) as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    clock.run(until_us=1_000_000)
    assert errors == [] and [r.payload for r in node.got] == [b"from a thread"]


def test_the_concentrator_does_not_receive_while_it_transmits(clock, channel, gateway):
    node = channel.attach(Radio("node", (500, 0)))
    gateway.send_at(20_000, F2, 7, 125, b"downlink on another channel")
    send(channel, node, b"uplink during downlink")
    clock.run(until_us=1_000_000)
    assert gateway.got == []
    send(channel, node, b"uplink after")
    clock.run(until_us=2_000_000)
    assert [p.payload for p in gateway.got] == [b"uplink after"]


def test_a_failing_uplink_callback_is_counted_not_fatal(clock, channel, gateway):
    node = channel.attach(Radio("node", (500, 0)))

    def boom(pkt):
        raise RuntimeError("consumer bug")

    gateway.on_uplink = boom
    send(channel, node)
    clock.run(until_us=1_000_000)
    assert gateway.callback_errors == 1 and gateway.uplinks == 1


def test_send_at_rejects_impossible_downlinks(gateway):
    with pytest.raises(ValueError, match="spreading factor"):
        gateway.send_at(10, F1, 6, 125, b"x")
    with pytest.raises(ValueError, match="kHz"):
        gateway.send_at(10, F1, 7, 62, b"x")
    with pytest.raises(ValueError, match="1..255"):
        gateway.send_at(10, F1, 7, 125, b"")
