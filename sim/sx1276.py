"""Register-level model of a Semtech SX1276 (LoRa mode) on the simulated SPI bus and radio channel.

"DS" = SX1276/77/78/79 Datasheet rev 7. The model speaks the chip's SPI protocol (DS 4.3): the
first byte after NSS falls is the address, bit 7 set for a write; the following bytes are data,
the address auto-incrementing, except at RegFifo (0x00) where each byte moves RegFifoAddrPtr
instead. During a write the chip shifts out the register's old value.

What is modelled (what the cityedge driver and sensible others touch):

- the register map with reset values: the common registers 0x00-0x0C and 0x40-0x7F, and the
  LoRa page of 0x0D-0x3F (the FSK page is stored but has no behaviour); RegVersion = 0x12;
- RegOpMode: LongRangeMode only changes when the chip is in SLEEP (DS 6.4), modes SLEEP, STDBY,
  FSTX, TX, FSRX, RXCONTINUOUS, RXSINGLE and CAD; the FIFO is lost in SLEEP and not accessible
  there (reads 0x00, writes ignored);
- the 256-byte FIFO with RegFifoAddrPtr, RegFifoTxBaseAddr, RegFifoRxBaseAddr,
  RegFifoRxCurrentAddr, RegRxNbBytes, RegFifoRxByteAddr;
- RegIrqFlags (write 1 to clear) and RegIrqFlagsMask (a masked IRQ is neither flagged nor
  signalled on DIO0); DIO0 driven per RegDioMapping1 (00 RxDone, 01 TxDone, 10 CadDone), DIO1
  too (00 RxTimeout, 01 FhssChangeChannel, 10 CadDetected; DS table 18);
- TX: RegPayloadLength bytes from RegFifoTxBaseAddr go on the air with the settings of
  RegFrf*, RegModemConfig1/2/3, RegPreamble*, RegSyncWord, RegInvertIQ and RegPaConfig/RegPaDac
  (output power per DS 5.4.2/5.4.3, capped when RegOcp's limit is below the current DS table 6
  gives for it); after the exact time on air TxDone rises and the chip returns to STDBY;
- RX: the settings are latched when RX starts (as the chip does: Frf is taken into account on
  entering RX). A packet is received when its frequency (within BW/4), SF, bandwidth, IQ
  polarity, sync word, header mode and low data rate optimisation match and the channel says it
  was locked and decoded; it is written at the receive pointer, which starts at
  RegFifoRxBaseAddr on entering RX and advances packet by packet in RXCONTINUOUS.
  RxDone (+ ValidHeader in explicit mode) rises, PayloadCrcError too when the channel corrupted
  it and the packet carries a CRC. RegPktSnrValue = SNR * 4 and RegPktRssiValue = total power
  (signal + noise) + 157, so that DS 5.5.5 gives the packet strength back: -157 + PacketRssi when
  SNR >= 0, -157 + PacketRssi + PacketSnr / 4 when SNR < 0. RegRssiValue shows the current
  channel power, RegModemStat SignalDetected/RxOngoing while a packet is being received;
- RXSINGLE times out after SymbTimeout symbols (RxTimeout, back to STDBY) unless a packet's
  preamble started in the window, in which case it waits for that packet;
- NRESET (a SimPin, active low): held low at least 100 us it restores every reset value; the
  chip answers the SPI again 5 ms after release (DS 7.2.2); before that MISO reads 0x00;
- CAD: after two symbols CadDone, plus CadDetected if a preamble of its SF is on the air.

Not modelled: FSK/OOK, frequency hopping, the LNA gain (RegLna is stored), temperature, image
calibration, RegInvertIQ2 (stored: Semtech's drivers write it next to RegInvertIQ), the TX ramp
and PLL lock times (the packet leaves at the SPI write that selects TX).

RegOpMode resets to 0x09 (FSK, LowFrequencyModeOn, STDBY): DS section 6 gives bit 3 a reset value
of 1 although its summary table prints 0x01. RegInvertIQ reads 0x27 in LoRa mode (normal IQ both
ways), not the 0x26 DS documents; its TX bit is 0 for *inverted*, as in Semtech's own drivers.
"""

from __future__ import annotations

import math
from typing import Any

from protocol.airtime import BANDWIDTHS_HZ, symbol_time_us
from sim.bus import SimPin, SimSPI
from sim.channel import Endpoint, RadioChannel, Reception, Transmission, noise_floor_dbm

F_XOSC_HZ = 32_000_000
VERSION = 0x12

# -- registers (DS 6.4) ----------------------------------------------------------------------------
REG_FIFO = 0x00
REG_OP_MODE = 0x01
REG_FRF_MSB, REG_FRF_MID, REG_FRF_LSB = 0x06, 0x07, 0x08
REG_PA_CONFIG = 0x09
REG_OCP = 0x0B
REG_LNA = 0x0C
REG_FIFO_ADDR_PTR = 0x0D
REG_FIFO_TX_BASE_ADDR = 0x0E
REG_FIFO_RX_BASE_ADDR = 0x0F
REG_FIFO_RX_CURRENT_ADDR = 0x10
REG_IRQ_FLAGS_MASK = 0x11
REG_IRQ_FLAGS = 0x12
REG_RX_NB_BYTES = 0x13
REG_MODEM_STAT = 0x18
REG_PKT_SNR_VALUE = 0x19
REG_PKT_RSSI_VALUE = 0x1A
REG_RSSI_VALUE = 0x1B
REG_HOP_CHANNEL = 0x1C
REG_MODEM_CONFIG1 = 0x1D
REG_MODEM_CONFIG2 = 0x1E
REG_SYMB_TIMEOUT_LSB = 0x1F
REG_PREAMBLE_MSB = 0x20
REG_PREAMBLE_LSB = 0x21
REG_PAYLOAD_LENGTH = 0x22
REG_MAX_PAYLOAD_LENGTH = 0x23
REG_FIFO_RX_BYTE_ADDR = 0x25
REG_MODEM_CONFIG3 = 0x26
REG_INVERT_IQ = 0x33
REG_SYNC_WORD = 0x39
REG_INVERT_IQ2 = 0x3B
REG_DIO_MAPPING1 = 0x40
REG_DIO_MAPPING2 = 0x41
REG_VERSION = 0x42
REG_PA_DAC = 0x4D

LONG_RANGE_MODE = 0x80
MODE_SLEEP, MODE_STDBY, MODE_FSTX, MODE_TX = 0, 1, 2, 3
MODE_FSRX, MODE_RX_CONTINUOUS, MODE_RX_SINGLE, MODE_CAD = 4, 5, 6, 7
MODE_NAMES = ("SLEEP", "STDBY", "FSTX", "TX", "FSRX", "RXCONTINUOUS", "RXSINGLE", "CAD")

IRQ_RX_TIMEOUT = 0x80
IRQ_RX_DONE = 0x40
IRQ_PAYLOAD_CRC_ERROR = 0x20
IRQ_VALID_HEADER = 0x10
IRQ_TX_DONE = 0x08
IRQ_CAD_DONE = 0x04
IRQ_FHSS_CHANGE_CHANNEL = 0x02
IRQ_CAD_DETECTED = 0x01

_DIO0_SOURCES = (IRQ_RX_DONE, IRQ_TX_DONE, IRQ_CAD_DONE, 0)  # RegDioMapping1 Dio0Mapping 00..11
# DS table 18 (LoRa mode): Dio1Mapping (RegDioMapping1 bits 5-4) 00 RxTimeout, 01
# FhssChangeChannel, 10 CadDetected, 11 none
_DIO1_SOURCES = (IRQ_RX_TIMEOUT, IRQ_FHSS_CHANGE_CHANNEL, IRQ_CAD_DETECTED, 0)

# Reset values (DS 6.4 tables; registers not listed reset to 0x00 in this model).
COMMON_RESET = {
    0x01: 0x09, 0x02: 0x1A, 0x03: 0x0B, 0x04: 0x00, 0x05: 0x52, 0x06: 0x6C, 0x07: 0x80,
    0x08: 0x00, 0x09: 0x4F, 0x0A: 0x09, 0x0B: 0x2B, 0x0C: 0x20, 0x40: 0x00, 0x41: 0x00,
    0x42: VERSION, 0x44: 0x2D, 0x4B: 0x09, 0x4D: 0x84, 0x70: 0xD0,
}  # fmt: skip
LORA_RESET = {
    0x0D: 0x00, 0x0E: 0x80, 0x0F: 0x00, 0x10: 0x00, 0x11: 0x00, 0x12: 0x00, 0x13: 0x00,
    0x1D: 0x72, 0x1E: 0x70, 0x1F: 0x64, 0x20: 0x00, 0x21: 0x08, 0x22: 0x01, 0x23: 0xFF,
    0x24: 0x00, 0x26: 0x04, 0x31: 0xC3, 0x33: 0x27, 0x36: 0x03, 0x37: 0x0A, 0x39: 0x12,
    0x3B: 0x1D,
}  # fmt: skip
# LoRa-page registers the host cannot write (status, packet information).
LORA_READ_ONLY = frozenset({0x10, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C,
                            0x25, 0x28, 0x29, 0x2A, 0x2C})  # fmt: skip
COMMON_READ_ONLY = frozenset({REG_VERSION})

RESET_HOLD_US = 100  # DS 7.2.2: NRESET low for at least 100 us
RESET_READY_US = 5_000  # ... then wait 5 ms before using the chip

# DS table 6 "Power consumption": supply current in TX at a given output power (dBm -> mA).
_PA_BOOST_CURRENT = ((17.0, 87.0), (20.0, 120.0))
_RFO_CURRENT = ((7.0, 20.0), (13.0, 29.0))


def _interp(points: tuple[tuple[float, float], ...], x: float) -> float:
    (x0, y0), (x1, y1) = points
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x > x0 else y0


class _RxConfig:
    """The receiver settings latched when RX starts."""

    __slots__ = (
        "bw_hz",
        "cr",
        "crc",
        "freq_hz",
        "implicit",
        "iq_inverted",
        "ldro",
        "payload_len",
        "sf",
        "sync_word",
    )  # fmt: skip


class SX1276Model(Endpoint):
    """A simulated SX1276: an SPI device for ``SimSPI`` and an endpoint on a ``RadioChannel``."""

    def __init__(
        self,
        clock: Any,
        channel: RadioChannel,
        position: tuple[float, float] = (0.0, 0.0),
        name: str = "sx1276",
        dio0: SimPin | None = None,
        reset: SimPin | None = None,
        dio1: SimPin | None = None,
        noise_figure_db: float = 6.0,
        antenna_gain_dbi: float = 0.0,
    ) -> None:
        self.clock = clock
        self.channel = channel
        self.position = position
        self.name = name
        self.noise_figure_db = noise_figure_db
        self.antenna_gain_dbi = antenna_gain_dbi
        self.dio0 = dio0 if dio0 is not None else SimPin(f"{name}.dio0", SimPin.IN, 0)
        self.dio1 = dio1 if dio1 is not None else SimPin(f"{name}.dio1", SimPin.IN, 0)
        self.reset = reset if reset is not None else SimPin(f"{name}.nreset", SimPin.IN, 1)
        self.reset.watch(self._on_reset_pin)
        # counters for tests
        self.tx_count = 0
        self.rx_ok = 0
        self.crc_errors = 0
        self.rx_timeouts = 0
        self.cad_count = 0
        self.ocp_limited = 0
        self.spi_transactions = 0
        self.last_tx: Transmission | None = None
        self._reset_low_at: int | None = None
        self._ready_at = 0
        self._addr: int | None = None
        self._write = False
        self._session = 0
        self._tx: Transmission | None = None
        self._rx_cfg: _RxConfig | None = None
        self._rx_since = 0
        self._rx_ptr = 0
        self._power_on_reset()
        channel.attach(self)

    # -- wiring helpers ---------------------------------------------------------------------------
    def wire(self, spi: SimSPI | None = None, cs: SimPin | None = None) -> tuple[SimSPI, SimPin]:
        """Put the chip on ``spi`` (a new bus if None) behind ``cs``; returns (spi, cs)."""
        spi = spi if spi is not None else SimSPI()
        cs = cs if cs is not None else SimPin(f"{self.name}.nss", SimPin.OUT, 1)
        spi.attach(cs, self)
        return spi, cs

    # -- state ------------------------------------------------------------------------------------
    def _power_on_reset(self) -> None:
        self._common = bytearray(0x80)
        for a, v in COMMON_RESET.items():
            self._common[a] = v
        self._lora = bytearray(0x40)
        for a, v in LORA_RESET.items():
            self._lora[a] = v
        self._fsk = bytearray(0x40)
        self._fifo = bytearray(256)
        self._session += 1
        self._rx_cfg = None
        if self._tx is not None:
            self.channel.abort(self._tx)
            self._tx = None
        self.dio0.drive(0)
        self.dio1.drive(0)

    @property
    def lora(self) -> bool:
        return bool(self._common[REG_OP_MODE] & LONG_RANGE_MODE)

    @property
    def mode(self) -> int:
        return self._common[REG_OP_MODE] & 0x07

    @property
    def mode_name(self) -> str:
        return ("LoRa " if self.lora else "FSK ") + MODE_NAMES[self.mode]

    @property
    def irq_flags(self) -> int:
        return self._lora[REG_IRQ_FLAGS]

    @property
    def fifo(self) -> bytes:
        return bytes(self._fifo)

    def reg(self, addr: int) -> int:
        """A register's value without side effects (LoRa page for 0x0D-0x3F), for tests."""
        if 0x0D <= addr <= 0x3F:
            return self._lora[addr]
        return self._common[addr]

    def _spi_ready(self) -> bool:
        return self._reset_low_at is None and self.clock.now_us() >= self._ready_at

    # -- modem settings from the registers --------------------------------------------------------
    @property
    def freq_hz(self) -> int:
        c = self._common
        frf = (c[REG_FRF_MSB] << 16) | (c[REG_FRF_MID] << 8) | c[REG_FRF_LSB]
        return round(frf * F_XOSC_HZ / (1 << 19))

    @property
    def sf(self) -> int:
        return min(12, max(6, self._lora[REG_MODEM_CONFIG2] >> 4))

    @property
    def bw_hz(self) -> int:
        return BANDWIDTHS_HZ[min(9, self._lora[REG_MODEM_CONFIG1] >> 4)]

    @property
    def cr(self) -> int:
        return min(4, max(1, (self._lora[REG_MODEM_CONFIG1] >> 1) & 0x07))

    @property
    def implicit_header(self) -> bool:
        return bool(self._lora[REG_MODEM_CONFIG1] & 0x01)

    @property
    def crc_on(self) -> bool:
        return bool(self._lora[REG_MODEM_CONFIG2] & 0x04)

    @property
    def ldro(self) -> bool:
        return bool(self._lora[REG_MODEM_CONFIG3] & 0x08)

    @property
    def preamble(self) -> int:
        return (self._lora[REG_PREAMBLE_MSB] << 8) | self._lora[REG_PREAMBLE_LSB]

    @property
    def sync_word(self) -> int:
        return self._lora[REG_SYNC_WORD]

    @property
    def iq_inverted_rx(self) -> bool:
        return bool(self._lora[REG_INVERT_IQ] & 0x40)

    @property
    def iq_inverted_tx(self) -> bool:
        return not self._lora[REG_INVERT_IQ] & 0x01

    @property
    def symb_timeout(self) -> int:
        return ((self._lora[REG_MODEM_CONFIG2] & 0x03) << 8) | self._lora[REG_SYMB_TIMEOUT_LSB]

    @property
    def tx_power_dbm(self) -> float:
        """Output power from RegPaConfig/RegPaDac (DS 5.4.2, 5.4.3), capped by RegOcp."""
        pa = self._common[REG_PA_CONFIG]
        out = pa & 0x0F
        if pa & 0x80:  # PA_BOOST
            p = 17.0 - (15 - out)
            if self._common[REG_PA_DAC] & 0x07 == 0x07:
                p += 3.0
            curve = _PA_BOOST_CURRENT
        else:
            p = 10.8 + 0.6 * ((pa >> 4) & 0x07) - (15 - out)
            curve = _RFO_CURRENT
        ocp = self._common[REG_OCP]
        if ocp & 0x20:
            trim = ocp & 0x1F
            imax = 45 + 5 * trim if trim <= 15 else (-30 + 10 * trim if trim <= 27 else 240)
            if _interp(curve, p) > imax:
                (x0, y0), (x1, y1) = curve
                p = min(p, x0 + (imax - y0) * (x1 - x0) / (y1 - y0))
        return p

    # -- SPI device protocol (sim.bus) -------------------------------------------------------------
    def spi_begin(self) -> None:
        self._addr = None
        self.spi_transactions += 1

    def spi_end(self) -> None:
        self._addr = None

    def spi_byte(self, out: int) -> int:
        if not self._spi_ready():
            return 0x00
        if self._addr is None:
            self._addr = out & 0x7F
            self._write = bool(out & 0x80)
            return 0x00
        addr = self._addr
        if self._write:
            old = 0x00 if addr == REG_FIFO else self._peek(addr)
            self._write_reg(addr, out)
            result = old
        else:
            result = self._read_reg(addr)
        if addr != REG_FIFO:
            self._addr = (addr + 1) & 0x7F
        return result

    def _peek(self, addr: int) -> int:
        if 0x0D <= addr <= 0x3F:
            return (self._lora if self.lora else self._fsk)[addr]
        return self._common[addr]

    def _read_reg(self, addr: int) -> int:
        if addr == REG_FIFO:
            if not self.lora or self.mode == MODE_SLEEP:
                return 0x00
            ptr = self._lora[REG_FIFO_ADDR_PTR]
            self._lora[REG_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
            return self._fifo[ptr]
        if self.lora and addr == REG_RSSI_VALUE and self._rx_cfg is not None:
            cfg = self._rx_cfg
            power = self.channel.power_dbm(self, cfg.freq_hz, cfg.bw_hz)
            self._lora[REG_RSSI_VALUE] = max(0, min(255, round(power + 157)))
        elif self.lora and addr == REG_MODEM_STAT:
            busy = self._rx_cfg is not None and self.channel.pending_for(self) is not None
            cr_bits = self._lora[REG_MODEM_STAT] & 0xE0
            self._lora[REG_MODEM_STAT] = cr_bits | (0x07 if busy else 0x10)
        return self._peek(addr)

    def _write_reg(self, addr: int, value: int) -> None:
        value &= 0xFF
        if addr == REG_FIFO:
            if self.lora and self.mode != MODE_SLEEP:
                ptr = self._lora[REG_FIFO_ADDR_PTR]
                self._fifo[ptr] = value
                self._lora[REG_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
            return
        if addr == REG_OP_MODE:
            self._write_op_mode(value)
            return
        if 0x0D <= addr <= 0x3F:
            if not self.lora:
                self._fsk[addr] = value
                return
            if addr == REG_IRQ_FLAGS:  # write 1 to clear
                self._lora[REG_IRQ_FLAGS] &= ~value & 0xFF
                self._update_dio()
                return
            if addr not in LORA_READ_ONLY:
                self._lora[addr] = value
            return
        if addr in COMMON_READ_ONLY:
            return
        self._common[addr] = value
        if addr == REG_DIO_MAPPING1:
            self._update_dio()

    # -- modes -------------------------------------------------------------------------------------
    def _write_op_mode(self, value: int) -> None:
        old = self._common[REG_OP_MODE]
        old_mode = old & 0x07
        long_range = old & LONG_RANGE_MODE
        if old_mode == MODE_SLEEP:
            long_range = value & LONG_RANGE_MODE  # DS 6.4: only writable in SLEEP
        new = long_range | (value & 0x7F)
        self._common[REG_OP_MODE] = new
        new_mode = new & 0x07
        if new_mode == old_mode and (new ^ old) & LONG_RANGE_MODE == 0:
            return
        self._leave_mode()
        if new_mode == MODE_SLEEP:
            self._fifo = bytearray(256)  # FIFO contents are lost in SLEEP
        if not long_range:
            return  # FSK/OOK: not modelled
        if new_mode == MODE_TX:
            self._start_tx()
        elif new_mode in (MODE_RX_CONTINUOUS, MODE_RX_SINGLE):
            self._start_rx(single=new_mode == MODE_RX_SINGLE)
        elif new_mode == MODE_CAD:
            self._start_cad()

    def _leave_mode(self) -> None:
        self._session += 1  # pending timers of the previous mode become stale
        self._rx_cfg = None
        if self._tx is not None:
            self.channel.abort(self._tx)  # TX interrupted by a mode change
            self._tx = None

    def _to_standby(self) -> None:
        self._session += 1
        self._rx_cfg = None
        self._common[REG_OP_MODE] = (self._common[REG_OP_MODE] & 0xF8) | MODE_STDBY

    def _set_flags(self, bits: int) -> None:
        bits &= ~self._lora[REG_IRQ_FLAGS_MASK] & 0xFF
        self._lora[REG_IRQ_FLAGS] |= bits
        self._update_dio()

    def _update_dio(self) -> None:
        mapping, flags = self._common[REG_DIO_MAPPING1], self._lora[REG_IRQ_FLAGS]
        self.dio0.drive(1 if flags & _DIO0_SOURCES[(mapping >> 6) & 0x03] else 0)
        self.dio1.drive(1 if flags & _DIO1_SOURCES[(mapping >> 4) & 0x03] else 0)

    # -- TX ----------------------------------------------------------------------------------------
    def _start_tx(self) -> None:
        n = self._lora[REG_PAYLOAD_LENGTH]
        base = self._lora[REG_FIFO_TX_BASE_ADDR]
        payload = bytes(self._fifo[(base + i) & 0xFF] for i in range(n))
        power = self.tx_power_dbm
        nominal = self._nominal_power()
        if power < nominal:
            self.ocp_limited += 1
        tx = self.channel.transmit(
            self,
            payload,
            freq_hz=self.freq_hz,
            sf=self.sf,
            bw_hz=self.bw_hz,
            cr=self.cr,
            preamble=self.preamble,
            explicit_header=not self.implicit_header,
            crc=self.crc_on,
            iq_inverted=self.iq_inverted_tx,
            sync_word=self.sync_word,
            tx_power_dbm=power,
            ldro=self.ldro,
        )
        self._tx = self.last_tx = tx
        self.tx_count += 1
        self.clock.call_at(tx.end_us, self._tx_done, self._session)

    def _nominal_power(self) -> float:
        saved = self._common[REG_OCP]
        self._common[REG_OCP] = saved & ~0x20
        try:
            return self.tx_power_dbm
        finally:
            self._common[REG_OCP] = saved

    def _tx_done(self, session: int) -> None:
        if session != self._session:
            return
        self._tx = None
        self._to_standby()
        self._set_flags(IRQ_TX_DONE)

    # -- RX ----------------------------------------------------------------------------------------
    def _start_rx(self, single: bool) -> None:
        cfg = _RxConfig()
        cfg.freq_hz, cfg.sf, cfg.bw_hz, cfg.cr = self.freq_hz, self.sf, self.bw_hz, self.cr
        cfg.implicit, cfg.crc, cfg.ldro = self.implicit_header, self.crc_on, self.ldro
        cfg.iq_inverted, cfg.sync_word = self.iq_inverted_rx, self.sync_word
        cfg.payload_len = self._lora[REG_PAYLOAD_LENGTH]
        self._rx_cfg = cfg
        self._rx_since = self.clock.now_us()
        self._rx_ptr = self._lora[REG_FIFO_RX_BASE_ADDR]
        if single:
            timeout = self.symb_timeout * symbol_time_us(cfg.sf, cfg.bw_hz)
            self.clock.call_at(self._rx_since + timeout, self._rx_timeout, self._session)

    def _rx_timeout(self, session: int) -> None:
        if session != self._session or self.mode != MODE_RX_SINGLE:
            return
        pending = self.channel.pending_for(self)
        if pending is not None:
            # A preamble began inside the window: the receiver stays on for that packet. If the
            # channel does not deliver it (collision), time out when it ends.
            self.clock.call_at(pending.end_us, self._rx_timeout, session)
            return
        self.rx_timeouts += 1
        self._to_standby()
        self._set_flags(IRQ_RX_TIMEOUT)

    def listening_since(self, tx: Transmission) -> int | None:
        cfg = self._rx_cfg
        if (
            cfg is None
            or not self._spi_ready()
            or self.mode
            not in (
                MODE_RX_CONTINUOUS,
                MODE_RX_SINGLE,
            )
        ):
            return None
        if (
            not RadioChannel.tunes_to(tx, cfg.freq_hz, cfg.bw_hz)
            or tx.sf != cfg.sf
            or tx.iq_inverted != cfg.iq_inverted
            or tx.sync_word != cfg.sync_word
            or tx.explicit_header == cfg.implicit
            or tx.ldro != cfg.ldro
        ):
            return None
        return self._rx_since

    def deliver(self, rx: Reception) -> None:
        cfg = self._rx_cfg
        if cfg is None:
            return
        tx = rx.tx
        data = rx.payload
        corrupted = rx.corrupted
        if cfg.implicit:
            crc_present = cfg.crc
            if len(data) != cfg.payload_len or tx.cr != cfg.cr or tx.crc != cfg.crc:
                corrupted = True  # the receiver decodes with its own length/CR/CRC settings
                data = (data + bytes(cfg.payload_len))[: cfg.payload_len]
        else:
            crc_present = tx.crc
        ptr = self._rx_ptr
        for i, b in enumerate(data):
            self._fifo[(ptr + i) & 0xFF] = b
        n = len(data)
        lo = self._lora
        lo[REG_FIFO_RX_CURRENT_ADDR] = ptr
        lo[REG_RX_NB_BYTES] = n
        lo[REG_FIFO_RX_BYTE_ADDR] = (ptr + max(n, 1) - 1) & 0xFF
        self._rx_ptr = (ptr + n) & 0xFF
        snr_q = max(-128, min(127, round(rx.snr_db * 4)))
        lo[REG_PKT_SNR_VALUE] = snr_q & 0xFF
        noise = noise_floor_dbm(tx.bw_hz, self.noise_figure_db)
        total = 10 * math.log10(10 ** (rx.rssi_dbm / 10) + 10 ** (noise / 10))
        lo[REG_PKT_RSSI_VALUE] = max(0, min(255, round(total + 157)))
        lo[REG_HOP_CHANNEL] = 0x40 if crc_present else 0x00
        lo[REG_MODEM_STAT] = (tx.cr << 5) | 0x10
        flags = IRQ_RX_DONE | (0 if cfg.implicit else IRQ_VALID_HEADER)
        if corrupted and crc_present:
            flags |= IRQ_PAYLOAD_CRC_ERROR
            self.crc_errors += 1
        else:
            self.rx_ok += 1
        if self.mode == MODE_RX_SINGLE:
            self._to_standby()
        self._set_flags(flags)

    # -- CAD ---------------------------------------------------------------------------------------
    def _start_cad(self) -> None:
        self.cad_count += 1
        sf, bw, freq = self.sf, self.bw_hz, self.freq_hz
        at = self.clock.now_us() + 2 * symbol_time_us(sf, bw)
        self.clock.call_at(at, self._cad_done, self._session, sf, bw, freq)

    def _cad_done(self, session: int, sf: int, bw: int, freq: int) -> None:
        if session != self._session:
            return
        detected = False
        for tx in self.channel.in_air():
            if tx.sender is not self and tx.sf == sf and RadioChannel.tunes_to(tx, freq, bw):
                rssi, snr = self.channel.link_budget(tx, self)
                detected = detected or self.channel.detectable(tx, self, rssi, snr)
        self._to_standby()
        self._set_flags(IRQ_CAD_DONE | (IRQ_CAD_DETECTED if detected else 0))

    # -- NRESET ------------------------------------------------------------------------------------
    def _on_reset_pin(self, level: int) -> None:
        now = self.clock.now_us()
        if level == 0:
            self._reset_low_at = now
            return
        low_at, self._reset_low_at = self._reset_low_at, None
        if low_at is not None and now - low_at >= RESET_HOLD_US:
            self._power_on_reset()
            self._ready_at = now + RESET_READY_US

    def __repr__(self) -> str:
        return f"<SX1276Model {self.name} {self.mode_name} at {self.position}>"
