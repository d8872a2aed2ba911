"""The SX1276 register model: reset values, SPI protocol, modes, FIFO, IRQs, TX/RX timing, NRESET.

These talk to the model over the simulated SPI bus directly (no driver), the way a logic analyser
would see a host do it.
"""

import pytest

from protocol.airtime import symbol_time_us, time_on_air_us
from sim.bus import SimPin
from sim.channel import Endpoint, RadioChannel, Reception
from sim.clock import VirtualClock
from sim.sx1276 import (
    IRQ_CAD_DETECTED,
    IRQ_CAD_DONE,
    IRQ_PAYLOAD_CRC_ERROR,
    IRQ_RX_DONE,
    IRQ_RX_TIMEOUT,
    IRQ_TX_DONE,
    IRQ_VALID_HEADER,
    SX1276Model,
)


class Host:
    """Raw register access over SimSPI, as the datasheet's SPI section describes it."""

    def __init__(self, model):
        self.spi, self.cs = model.wire()

    def transfer(self, out):
        buf = bytearray(len(out))
        self.cs.value(0)
        self.spi.write_readinto(bytes(out), buf)
        self.cs.value(1)
        return bytes(buf)

    def read(self, addr, n=1):
        data = self.transfer([addr] + [0] * n)[1:]
        return data[0] if n == 1 else data

    def write(self, addr, *values):
        return self.transfer([addr | 0x80, *values])[1:]

    def lora_standby(self):
        self.write(0x01, 0x00)  # SLEEP (FSK)
        self.write(0x01, 0x80)  # LongRangeMode in SLEEP
        self.write(0x01, 0x81)  # LoRa STDBY


class Listener(Endpoint):
    """An always-listening receiver for everything, to see what the model puts on the air."""

    def __init__(self, name="listener", position=(10.0, 0.0)):
        self.name, self.position, self.got = name, position, []

    def listening_since(self, tx):
        return 0

    def deliver(self, rx: Reception):
        self.got.append(rx)


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def channel(clock):
    return RadioChannel(clock)


@pytest.fixture
def chip(clock, channel):
    return SX1276Model(clock, channel, (0.0, 0.0), name="chip")


@pytest.fixture
def host(chip):
    return Host(chip)


def test_reset_values_are_the_datasheets(host):
    assert host.read(0x42) == 0x12  # RegVersion
    assert host.read(0x01) == 0x09  # FSK, LowFrequencyModeOn, STDBY
    assert host.read(0x06, 3) == bytes([0x6C, 0x80, 0x00])  # 434 MHz
    assert host.read(0x09) == 0x4F  # RegPaConfig
    assert host.read(0x0B) == 0x2B  # RegOcp: on, 100 mA
    assert host.read(0x0C) == 0x20  # RegLna: G1
    assert host.read(0x4D) == 0x84  # RegPaDac
    host.lora_standby()
    assert host.read(0x0E) == 0x80  # RegFifoTxBaseAddr
    assert host.read(0x0F) == 0x00  # RegFifoRxBaseAddr
    assert host.read(0x1D, 3) == bytes([0x72, 0x70, 0x64])  # ModemConfig1/2, SymbTimeoutLsb
    assert host.read(0x20, 3) == bytes([0x00, 0x08, 0x01])  # preamble 8, payload length 1
    assert host.read(0x26) == 0x04  # AgcAutoOn
    assert host.read(0x33) == 0x27  # RegInvertIQ in LoRa mode
    assert host.read(0x39) == 0x12  # RegSyncWord
    assert host.read(0x3B) == 0x1D  # RegInvertIQ2


def test_long_range_mode_only_changes_in_sleep(host, chip):
    host.write(0x01, 0x81)  # from FSK STDBY: LongRangeMode ignored, STDBY kept
    assert host.read(0x01) == 0x01
    assert not chip.lora
    host.write(0x01, 0x80)  # STDBY -> SLEEP; the bit is still ignored (it was STDBY when written)
    assert host.read(0x01) == 0x00
    host.write(0x01, 0x80)  # now in SLEEP: LoRa mode
    assert host.read(0x01) == 0x80 and chip.lora
    host.write(0x01, 0x01)  # from LoRa SLEEP, clearing the bit goes back to FSK
    assert host.read(0x01) == 0x01 and not chip.lora


def test_burst_access_auto_increments_and_a_write_shifts_out_the_old_value(host, chip):
    assert host.write(0x06, 0xD9, 0x06, 0x66) == bytes([0x6C, 0x80, 0x00])
    assert host.read(0x06, 3) == bytes([0xD9, 0x06, 0x66])
    assert chip.freq_hz == pytest.approx(868_100_000, abs=61)
    host.write(0x42, 0x55)  # RegVersion is read-only
    assert host.read(0x42) == 0x12


def test_fifo_access_moves_fifo_addr_ptr_not_the_address(host, chip):
    host.lora_standby()
    host.write(0x0D, 0xFE)  # RegFifoAddrPtr near the end: it wraps at 256
    host.write(0x00, 1, 2, 3, 4)
    assert host.read(0x0D) == 0x02
    assert chip.fifo[0xFE:] + chip.fifo[:2] == bytes([1, 2, 3, 4])
    host.write(0x0D, 0xFE)
    assert host.read(0x00, 4) == bytes([1, 2, 3, 4])


def test_fifo_is_not_accessible_in_sleep_and_lost_there(host, chip):
    host.lora_standby()
    host.write(0x0D, 0x00)
    host.write(0x00, 0xAA, 0xBB)
    host.write(0x01, 0x80)  # LoRa SLEEP
    host.write(0x0D, 0x00)
    assert host.read(0x00, 2) == bytes([0, 0])
    host.write(0x00, 0x11)
    host.write(0x01, 0x81)
    host.write(0x0D, 0x00)
    assert host.read(0x00, 2) == bytes([0, 0])


def _transmit(host, payload, mapping=0x40):
    host.write(0x0E, 0x00)
    host.write(0x0D, 0x00)
    host.write(0x00, *payload)
    host.write(0x22, len(payload))
    host.write(0x40, mapping)
    host.write(0x01, 0x83)


def test_tx_sends_payload_length_bytes_from_the_tx_base_for_the_exact_time_on_air(
    clock, channel, chip, host
):
    listener = channel.attach(Listener())
    host.lora_standby()
    host.write(0x0E, 0x10)  # RegFifoTxBaseAddr
    host.write(0x0D, 0x10)
    host.write(0x00, *b"ABCDEFGH")
    host.write(0x22, 5)  # RegPayloadLength: only 5 of the 8 bytes
    host.write(0x1E, 0x74)  # SF7, CRC on
    host.write(0x39, 0x34)
    host.write(0x01, 0x83)  # TX
    toa = time_on_air_us(5, 7)
    clock.run(until_us=toa - 1)
    assert chip.mode_name == "LoRa TX" and not host.read(0x12) & IRQ_TX_DONE
    clock.run(until_us=toa)
    assert chip.mode_name == "LoRa STDBY"
    assert host.read(0x12) == IRQ_TX_DONE
    assert [rx.payload for rx in listener.got] == [b"ABCDE"]
    tx = listener.got[0].tx
    assert (tx.sf, tx.bw_hz, tx.cr, tx.crc, tx.sync_word, tx.iq_inverted) == (
        7, 125_000, 1, True, 0x34, False
    )  # fmt: skip
    assert tx.end_us - tx.start_us == toa
    assert chip.tx_count == 1


def test_irq_flags_are_write_one_to_clear_and_drive_dio0_per_mapping(clock, chip, host):
    host.lora_standby()
    _transmit(host, b"x", mapping=0x40)  # Dio0Mapping 01 = TxDone
    clock.run(until_us=1_000_000)
    assert chip.dio0.value() == 1
    host.write(0x12, IRQ_RX_DONE)  # clearing another flag leaves TxDone alone
    assert host.read(0x12) == IRQ_TX_DONE and chip.dio0.value() == 1
    host.write(0x12, IRQ_TX_DONE)
    assert host.read(0x12) == 0 and chip.dio0.value() == 0


def test_dio0_mapped_to_rx_done_ignores_tx_done(clock, chip, host):
    host.lora_standby()
    _transmit(host, b"x", mapping=0x00)
    clock.run(until_us=1_000_000)
    assert host.read(0x12) == IRQ_TX_DONE and chip.dio0.value() == 0
    host.write(0x40, 0x40)  # remapping to TxDone shows the pending flag at once
    assert chip.dio0.value() == 1


def test_a_masked_irq_is_neither_flagged_nor_signalled(clock, chip, host):
    host.lora_standby()
    host.write(0x11, IRQ_TX_DONE)
    _transmit(host, b"x")
    clock.run(until_us=1_000_000)
    assert chip.mode_name == "LoRa STDBY"
    assert host.read(0x12) == 0 and chip.dio0.value() == 0


def test_leaving_tx_early_aborts_the_packet(clock, channel, chip, host):
    listener = channel.attach(Listener())
    host.lora_standby()
    _transmit(host, b"abcdef")
    clock.run(until_us=5_000)
    host.write(0x01, 0x81)
    clock.run(until_us=1_000_000)
    assert listener.got == [] and host.read(0x12) == 0


def test_output_power_follows_pa_config_pa_dac_and_ocp(host, chip):
    host.write(0x09, 0x8F)  # PA_BOOST, OutputPower 15
    assert chip.tx_power_dbm == 17
    host.write(0x09, 0xFC)
    assert chip.tx_power_dbm == 14
    host.write(0x09, 0x7E)  # RFO, MaxPower 7 (15 dBm), OutputPower 14
    assert chip.tx_power_dbm == pytest.approx(14.0)
    host.write(0x09, 0xFF)
    host.write(0x4D, 0x87)  # PaDac high power: +20 dBm ...
    host.write(0x0B, 0x31)  # ... with a 140 mA OCP limit
    assert chip.tx_power_dbm == 20
    host.write(0x0B, 0x2B)  # the 100 mA reset limit cannot feed the 120 mA +20 dBm needs
    assert 17 < chip.tx_power_dbm < 20


def _enter_rx(host, mode, symb_timeout=None, sf=7):
    host.lora_standby()
    host.write(0x1E, (sf << 4) | 0x04)
    if symb_timeout is not None:
        host.write(0x1E, (sf << 4) | 0x04 | (symb_timeout >> 8))
        host.write(0x1F, symb_timeout & 0xFF)
    host.write(0x39, 0x34)
    host.write(0x0F, 0x00)
    host.write(0x01, 0x80 | mode)


def test_rx_single_times_out_after_symb_timeout_symbols(clock, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x06, symb_timeout=10)
    deadline = 10 * symbol_time_us(7)
    clock.run(until_us=deadline - 1)
    assert chip.mode_name == "LoRa RXSINGLE" and host.read(0x12) == 0
    clock.run(until_us=deadline)
    assert host.read(0x12) == IRQ_RX_TIMEOUT and chip.mode_name == "LoRa STDBY"
    assert chip.rx_timeouts == 1


def test_rx_timeout_rises_on_dio1_with_its_default_mapping_not_on_dio0(clock, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x06, symb_timeout=10)  # RegDioMapping1 reset value 0x00: DIO1 = RxTimeout
    clock.run(until_us=10 * symbol_time_us(7) - 1)
    assert chip.dio1.value() == 0
    clock.run(until_us=10 * symbol_time_us(7))
    assert chip.dio1.value() == 1 and chip.dio0.value() == 0
    host.write(0x40, 0x30)  # Dio1Mapping 11: nothing
    assert chip.dio1.value() == 0
    host.write(0x40, 0x00)
    host.write(0x12, IRQ_RX_TIMEOUT)  # cleared: the line falls
    assert chip.dio1.value() == 0 and host.read(0x12) == 0


def _sender(channel, name="sender", position=(100.0, 0.0)):
    return channel.attach(_Quiet(name, position))


class _Quiet(Endpoint):
    def __init__(self, name, position):
        self.name, self.position = name, position


def _send(channel, sender, payload, sf=7, **kw):
    return channel.transmit(sender, payload, freq_hz=868_100_000, sf=sf, sync_word=0x34, **kw)


def test_rx_continuous_stacks_packets_from_the_rx_base(clock, channel, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x05)
    s = _sender(channel)
    _send(channel, s, b"first")
    clock.run(until_us=200_000)
    assert host.read(0x12) == IRQ_RX_DONE | IRQ_VALID_HEADER
    assert (host.read(0x10), host.read(0x13)) == (0, 5)  # RxCurrentAddr, RxNbBytes
    host.write(0x12, 0xFF)
    _send(channel, s, b"second")
    clock.run(until_us=400_000)
    assert (host.read(0x10), host.read(0x13)) == (5, 6)
    host.write(0x0D, 5)
    assert host.read(0x00, 6) == b"second"
    assert chip.mode_name == "LoRa RXCONTINUOUS" and chip.rx_ok == 2


def test_packet_snr_and_rssi_registers_follow_datasheet_5_5_5(clock, channel, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x05, sf=12)
    host.write(0x26, 0x0C)  # LowDataRateOptimize, as SF12/125 kHz requires
    host.write(0x01, 0x81)
    host.write(0x01, 0x85)
    near = _sender(channel, "near", (300.0, 0.0))
    far = _sender(channel, "far", (9_000.0, 0.0))
    for sender in (near, far):
        tx = _send(channel, sender, b"hello", sf=12)
        clock.run(until_us=tx.end_us + 1)
        assert host.read(0x12) & IRQ_RX_DONE
        rssi, snr = channel.link_budget(tx, chip)
        snr_q = host.read(0x19)
        snr_q = snr_q - 256 if snr_q > 127 else snr_q
        assert snr_q / 4 == pytest.approx(snr, abs=0.125)
        strength = -157 + host.read(0x1A) + (snr_q / 4 if snr_q < 0 else 0)
        assert strength == pytest.approx(rssi, abs=1.0)
        host.write(0x12, 0xFF)
    assert snr < 0  # the far one needed the SNR < 0 correction


def test_rx_single_waits_for_a_packet_whose_preamble_started_in_the_window(
    clock, channel, chip, host
):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x06, symb_timeout=10)
    s = _sender(channel)
    clock.run(until_us=8 * symbol_time_us(7))
    tx = _send(channel, s, b"late but in time")
    clock.run(until_us=tx.end_us)
    assert host.read(0x12) == IRQ_RX_DONE | IRQ_VALID_HEADER
    assert chip.mode_name == "LoRa STDBY" and chip.rx_timeouts == 0


def test_crc_error_is_flagged_when_the_channel_corrupts_a_packet_with_crc(
    clock, channel, chip, host
):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x05)
    s = _sender(channel)
    channel.corrupt_next(2)
    _send(channel, s, b"with crc", crc=True)
    clock.run(until_us=200_000)
    assert host.read(0x12) == IRQ_RX_DONE | IRQ_VALID_HEADER | IRQ_PAYLOAD_CRC_ERROR
    host.write(0x12, 0xFF)
    _send(channel, s, b"no crc!!", crc=False)  # a downlink-style packet: no CRC to fail
    clock.run(until_us=400_000)
    assert host.read(0x12) == IRQ_RX_DONE | IRQ_VALID_HEADER
    host.write(0x0D, host.read(0x10))
    assert host.read(0x00, 8) != b"no crc!!"  # garbled, silently
    assert (chip.crc_errors, chip.rx_ok) == (1, 1)


def test_settings_are_latched_when_rx_starts(clock, channel, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x05)
    host.write(0x06, 0xD9, 0x13, 0x33)  # retune to 868.3 MHz while receiving: not applied
    _send(channel, _sender(channel), b"on 868.1")
    clock.run(until_us=200_000)
    assert host.read(0x12) & IRQ_RX_DONE


def test_rssi_value_shows_the_noise_floor_when_the_channel_is_quiet(chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    _enter_rx(host, 0x05)
    # -174 dBm/Hz + 10 log10(125 kHz) + 6 dB NF = -117 dBm
    assert -157 + host.read(0x1B) == -117
    assert host.read(0x18) & 0x10  # ModemClear


def test_cad_reports_a_preamble_on_the_air(clock, channel, chip, host):
    host.write(0x06, 0xD9, 0x06, 0x66)
    host.lora_standby()
    host.write(0x01, 0x87)
    clock.run(until_us=10_000)
    assert host.read(0x12) == IRQ_CAD_DONE
    host.write(0x12, 0xFF)
    _send(channel, _sender(channel), b"busy channel")
    host.write(0x01, 0x87)
    clock.run(until_us=20_000)
    assert host.read(0x12) == IRQ_CAD_DONE | IRQ_CAD_DETECTED


def test_nreset_restores_reset_values_and_the_chip_answers_5_ms_later(clock, chip, host):
    host.lora_standby()
    host.write(0x39, 0x34)
    clock.run(until_us=1_000)
    chip.reset.drive(0)
    assert host.read(0x42) == 0x00  # held in reset: nothing answers
    clock.run(until_us=1_200)  # 200 us low
    chip.reset.drive(1)
    assert host.read(0x42) == 0x00  # still starting up
    clock.run(until_us=1_200 + 5_000)
    assert host.read(0x42) == 0x12
    assert host.read(0x01) == 0x09 and not chip.lora


def test_a_reset_glitch_shorter_than_100_us_does_not_reset(clock, chip, host):
    host.lora_standby()
    clock.run(until_us=1_000)
    chip.reset.drive(0)
    clock.run(until_us=1_050)
    chip.reset.drive(1)
    assert host.read(0x01) == 0x81


def test_reset_pin_can_be_supplied_by_the_board(clock, channel):
    pin = SimPin("board.rst", SimPin.OUT, 1)
    chip = SX1276Model(clock, channel, name="other", reset=pin)
    assert chip.reset is pin
