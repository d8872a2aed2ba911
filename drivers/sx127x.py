"""Semtech SX1276/77/78/79 LoRa radio driver (LoRa mode only), portable MicroPython/CPython.

In comments, "DS" = Semtech SX1276/77/78/79 Datasheet rev 7 (May 2020); register and field names
are the datasheet's own (section 6.4 "LoRa Mode Register Map"), so a line can be checked against
the page it came from. "Errata" = Semtech SX1276/77/78/79 Errata Note (2.1: 500 kHz sensitivity).

The driver takes its bus and pins from the caller and only uses ``spi.write``, ``spi.readinto``,
``spi.write_readinto``, ``pin.init``, ``pin.value`` and ``pin.irq``: a board's ``machine.SPI``/
``machine.Pin``, the Raspberry Pi's spidev/RPi.GPIO adapters and the simulator's SimSPI/SimPin all
work unchanged. Time only comes from ``drivers.ticks``.

Allocation: register access, FIFO writes, the polling loops and the DIO0 interrupt handler reuse
preallocated buffers and allocate nothing. A received packet costs one memoryview slice, the
returned ``bytes`` copy, the SNR float and the result tuple.

The DIO0 handler only records that the line rose; all register work happens in ``send``,
``receive`` and ``poll``. Because real DIO lines can misbehave, the flags register is also polled
every few cycles "just in case" even when DIO0 is wired.

LoRaWAN conventions: a node transmits with normal IQ and receives downlinks with inverted IQ
(``invert_iq_rx=True``); a single-channel gateway receives with normal IQ and transmits inverted
(``invert_iq_tx=True``). The public LoRaWAN sync word is 0x34, a private network uses 0x12.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers.ticks import sleep_ms, sleep_us, ticks_add, ticks_diff, ticks_ms
from protocol.airtime import BANDWIDTHS_HZ, ldro_required, symbol_time_us, time_on_air_us

# -- registers (DS 6.4) and their fields -------------------------------------------------------
_WRITE = const(0x80)  # DS 4.3: bit 7 of the address byte selects a write access

_REG_FIFO = const(0x00)
_REG_OP_MODE = const(0x01)
_LONG_RANGE_MODE = const(0x80)  # LoRa; only writable in SLEEP (DS 6.4 RegOpMode)
_LOW_FREQUENCY_MODE_ON = const(0x08)  # selects the LF test registers, below 525 MHz
_MODE_SLEEP = const(0x00)
_MODE_STDBY = const(0x01)
_MODE_TX = const(0x03)
_MODE_RX_CONTINUOUS = const(0x05)
_MODE_RX_SINGLE = const(0x06)

_REG_FRF_MSB = const(0x06)  # RegFrfMsb, RegFrfMid, RegFrfLsb: Frf = f * 2**19 / F(XOSC)
_REG_PA_CONFIG = const(0x09)
_PA_SELECT_PA_BOOST = const(0x80)
_MAX_POWER_7 = const(0x70)  # Pmax = 10.8 + 0.6 * 7 = 15 dBm on RFO
_REG_OCP = const(0x0B)
_OCP_ON = const(0x20)
_REG_LNA = const(0x0C)
_LNA_BOOST_HF_ON = const(0x03)  # 150 % LNA current, HF port

_REG_FIFO_ADDR_PTR = const(0x0D)
_REG_FIFO_TX_BASE_ADDR = const(0x0E)
_REG_FIFO_RX_BASE_ADDR = const(0x0F)
_REG_FIFO_RX_CURRENT_ADDR = const(0x10)
_REG_IRQ_FLAGS_MASK = const(0x11)
_REG_IRQ_FLAGS = const(0x12)
_IRQ_RX_TIMEOUT = const(0x80)
_IRQ_RX_DONE = const(0x40)
_IRQ_PAYLOAD_CRC_ERROR = const(0x20)
_IRQ_TX_DONE = const(0x08)
_IRQ_ALL = const(0xFF)
_REG_RX_NB_BYTES = const(0x13)
_REG_MODEM_STAT = const(0x18)
_MODEM_STAT_SIGNAL_DETECTED = const(0x01)
_REG_PKT_SNR_VALUE = const(0x19)  # followed by RegPktRssiValue (0x1A): read as a pair
_REG_MODEM_CONFIG1 = const(0x1D)  # Bw(7-4) CodingRate(3-1) ImplicitHeaderModeOn(0)
_REG_MODEM_CONFIG2 = const(0x1E)  # SpreadingFactor(7-4) RxPayloadCrcOn(2) SymbTimeout(9:8)
_RX_PAYLOAD_CRC_ON = const(0x04)
_REG_SYMB_TIMEOUT_LSB = const(0x1F)
_REG_PREAMBLE_MSB = const(0x20)
_REG_PREAMBLE_LSB = const(0x21)
_REG_PAYLOAD_LENGTH = const(0x22)
_REG_MODEM_CONFIG3 = const(0x26)
_LOW_DATA_RATE_OPTIMIZE = const(0x08)
_AGC_AUTO_ON = const(0x04)
_REG_INVERT_IQ = const(0x33)
# RegInvertIQ as Semtech's reference drivers (LoRaMac-node sx1276.c) program it; DS rev 7 gets the
# TX bit backwards. Bits 5-1 are reserved and keep their reset value 0x26.
_INVERT_IQ_BASE = const(0x26)
_INVERT_IQ_RX = const(0x40)  # 1: receive inverted IQ
_INVERT_IQ_TX_OFF = const(0x01)  # 1: transmit normal IQ, 0: transmit inverted IQ
_REG_HIGH_BW_OPTIMIZE1 = const(0x36)
_REG_SYNC_WORD = const(0x39)
_REG_HIGH_BW_OPTIMIZE2 = const(0x3A)
_REG_INVERT_IQ2 = const(0x3B)
_INVERT_IQ2_ON = const(0x19)
_INVERT_IQ2_OFF = const(0x1D)
_REG_DIO_MAPPING1 = const(0x40)
_DIO0_RX_DONE = const(0x00)  # Dio0Mapping 00 in RX modes
_DIO0_TX_DONE = const(0x40)  # Dio0Mapping 01
_REG_VERSION = const(0x42)
_VERSION_SX127X = const(0x12)
_REG_PA_DAC = const(0x4D)
_PA_DAC_DEFAULT = const(0x84)
_PA_DAC_20DBM = const(0x87)  # DS 5.4.3: +20 dBm on PA_BOOST (at most 1 % duty cycle)

_FIFO_TX_BASE = const(0x00)  # half duplex: TX and RX each may use the whole 256-byte FIFO
_FIFO_RX_BASE = const(0x00)
_MAX_SYMB_TIMEOUT = const(1023)  # 10-bit SymbTimeout
_BACKSTOP_POLLS = const(16)  # read RegIrqFlags every 16 poll cycles even if DIO0 stayed low


class RadioError(Exception):
    """The radio chip is missing or misbehaves: wiring, chip select, power, a stuck DIO line."""


class SX127x:
    """SX1276/77/78/79 in LoRa mode: configure, then ``send``, ``receive`` or ``poll``."""

    def __init__(
        self,
        spi,
        cs,
        reset=None,
        dio0=None,
        freq_hz=868100000,
        sf=7,
        bw_hz=125000,
        cr=1,
        tx_power_dbm=14,
        pa_boost=True,
        sync_word=0x34,
        preamble=8,
        crc=True,
        invert_iq_rx=False,
        invert_iq_tx=False,
        lna_gain=None,
        poll_ms=1,
    ):
        # Preallocated buffers: every register access reuses them (no allocation per access).
        self._out2 = bytearray(2)
        self._in2 = bytearray(2)
        self._addr = bytearray(1)
        self._frf = bytearray(3)
        self._pkt = bytearray(2)  # RegPktSnrValue, RegPktRssiValue
        self._rx_buf = bytearray(256)
        self._rx_mv = memoryview(self._rx_buf)

        self._spi = spi
        self._cs = cs
        self._dio0 = dio0
        self._poll_ms = poll_ms
        self._irq = False  # set by the DIO0 handler, cleared by whoever reads RegIrqFlags
        self._polls = 0
        self._rx_continuous = False
        self._handler = None
        # A battery node sets its light-sleep function here (ms -> None, e.g. machine.lightsleep):
        # the driver then sleeps through time on air and receive windows instead of polling
        # awake, a DIO0 interrupt (TxDone, RxDone) ending the sleep early where it can wake the MCU.
        self.nap = None
        self.tx_count = 0
        self.rx_count = 0
        self.crc_errors = 0
        self.rx_timeouts = 0
        self.last_rssi = None
        self.last_snr = None

        cs.init(cs.OUT)
        cs.value(1)
        if reset is not None:
            # DS 7.2.2 manual reset: NRESET low for more than 100 us, then wait 5 ms.
            reset.init(reset.OUT)
            reset.value(0)
            sleep_ms(1)
            reset.value(1)
            sleep_ms(6)

        version = self._read(_REG_VERSION)
        if version != _VERSION_SX127X:
            raise RadioError(
                f"no SX127x on the SPI bus (RegVersion 0x{version:02X}, expected 0x12): "
                "check wiring/CS"
            )

        # LongRangeMode can only change in SLEEP (DS 6.4): go to sleep first, then switch.
        self._op_base = _LONG_RANGE_MODE
        self._write(_REG_OP_MODE, _MODE_SLEEP)
        self._write(_REG_OP_MODE, _LONG_RANGE_MODE | _MODE_SLEEP)
        mode = self._read(_REG_OP_MODE)
        if not mode & _LONG_RANGE_MODE:
            raise RadioError(f"the SX127x did not enter LoRa mode (RegOpMode 0x{mode:02X})")

        self._freq_hz = 0
        self._sf = 7
        self._bw_hz = 125000
        self._cr = 1
        self._crc = True
        self._preamble = 8
        self._ldro = False
        self._mc1 = 0x72  # reset values (DS 6.4): BW 125 kHz, CR 4/5, explicit header
        self._mc2 = 0x70  # SF7, CRC off, SymbTimeout MSB 0
        self._mc3 = _AGC_AUTO_ON
        self._iq_rx = bool(invert_iq_rx)
        self._iq_tx = bool(invert_iq_tx)

        self.set_frequency(freq_hz)  # also sets LowFrequencyModeOn, so the mode writes follow it
        self._set_mode(_MODE_STDBY)
        self._write(_REG_FIFO_TX_BASE_ADDR, _FIFO_TX_BASE)
        self._write(_REG_FIFO_RX_BASE_ADDR, _FIFO_RX_BASE)
        self._write(_REG_IRQ_FLAGS_MASK, 0x00)  # every IRQ enabled; the driver filters
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        self.set_bandwidth(bw_hz)
        self.set_coding_rate(cr)
        self.set_spreading_factor(sf)
        self.set_crc(crc)
        self.set_preamble(preamble)
        self.set_sync_word(sync_word)
        self.set_tx_power(tx_power_dbm, pa_boost)
        self.set_lna_gain(lna_gain)

        if dio0 is not None:
            dio0.init(dio0.IN)
            dio0.irq(handler=self._isr, trigger=dio0.IRQ_RISING)

    # -- SPI register access (allocation-free) ----------------------------------------------------
    def _read(self, reg):
        out = self._out2
        out[0] = reg & 0x7F
        out[1] = 0
        self._cs.value(0)
        try:
            self._spi.write_readinto(out, self._in2)
        finally:
            self._cs.value(1)
        return self._in2[1]

    def _write(self, reg, value):
        out = self._out2
        out[0] = reg | _WRITE
        out[1] = value
        self._cs.value(0)
        try:
            self._spi.write(out)
        finally:
            self._cs.value(1)

    def _write_burst(self, reg, data):
        """Write ``data`` from ``reg`` on (auto-increment; RegFifo stays put, its pointer moves)."""
        self._addr[0] = reg | _WRITE
        self._cs.value(0)
        try:
            self._spi.write(self._addr)
            self._spi.write(data)
        finally:
            self._cs.value(1)

    def _read_burst(self, reg, buf):
        self._addr[0] = reg & 0x7F
        self._cs.value(0)
        try:
            self._spi.write(self._addr)
            self._spi.readinto(buf, 0)
        finally:
            self._cs.value(1)

    def _set_mode(self, mode):
        self._write(_REG_OP_MODE, self._op_base | mode)

    def _isr(self, pin):
        # DIO0 rose. Runs in interrupt context: record it, nothing else (no allocation, no SPI).
        self._irq = True

    # -- configuration ----------------------------------------------------------------------------
    def set_frequency(self, freq_hz):
        """Carrier frequency in Hz (137..1020 MHz); Frf = f * 2**19 / 32 MHz (DS 4.1.4)."""
        if not 137000000 <= freq_hz <= 1020000000:
            raise ValueError(f"frequency {freq_hz!r} Hz out of the SX127x range 137..1020 MHz")
        # f * 2**19 / 32e6 == f * 256 / 15625, rounded; split so that no big integer is needed.
        q, r = divmod(freq_hz, 15625)
        frf = q * 256 + (r * 256 + 7812) // 15625
        self._frf[0] = frf >> 16
        self._frf[1] = (frf >> 8) & 0xFF
        self._frf[2] = frf & 0xFF
        self._write_burst(_REG_FRF_MSB, self._frf)
        self._freq_hz = freq_hz
        low = _LOW_FREQUENCY_MODE_ON if freq_hz < 525000000 else 0
        self._op_base = _LONG_RANGE_MODE | low
        self._apply_bw_errata()

    def set_spreading_factor(self, sf):
        """SF7..SF12. SF6 needs implicit header mode, which this driver does not offer."""
        if sf == 6:
            raise ValueError("SF6 only works in implicit header mode, not supported: use SF7..SF12")
        if not 7 <= sf <= 12:
            raise ValueError(f"spreading factor {sf!r} out of range SF7..SF12")
        self._sf = sf
        self._mc2 = (self._mc2 & 0x0F) | (sf << 4)
        self._write(_REG_MODEM_CONFIG2, self._mc2)
        self._apply_ldro()

    def set_bandwidth(self, bw_hz):
        """Signal bandwidth in Hz: 7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, ..."""
        if bw_hz not in BANDWIDTHS_HZ:
            raise ValueError(
                "bandwidth {!r} Hz is not one of {}".format(
                    bw_hz, ", ".join(str(b) for b in BANDWIDTHS_HZ)
                )
            )
        self._bw_hz = bw_hz
        self._mc1 = (self._mc1 & 0x0F) | (BANDWIDTHS_HZ.index(bw_hz) << 4)
        self._write(_REG_MODEM_CONFIG1, self._mc1)
        self._apply_ldro()
        self._apply_bw_errata()

    def set_coding_rate(self, cr):
        """Coding rate index 1..4 for 4/5..4/8."""
        if not 1 <= cr <= 4:
            raise ValueError(f"coding rate index {cr!r} out of range 1..4 (4/5..4/8)")
        self._cr = cr
        self._mc1 = (self._mc1 & 0xF1) | (cr << 1)  # explicit header: bit 0 stays 0
        self._write(_REG_MODEM_CONFIG1, self._mc1)

    def set_crc(self, on):
        """Payload CRC on transmit (and expected on receive); LoRaWAN uplinks on, downlinks off."""
        self._crc = bool(on)
        if on:
            self._mc2 |= _RX_PAYLOAD_CRC_ON
        else:
            self._mc2 &= ~_RX_PAYLOAD_CRC_ON & 0xFF
        self._write(_REG_MODEM_CONFIG2, self._mc2)

    def set_preamble(self, symbols):
        """Programmed preamble length, 6..65535 symbols (the chip adds 4.25); LoRaWAN uses 8."""
        if not 6 <= symbols <= 65535:
            raise ValueError(f"preamble length {symbols!r} out of range 6..65535 symbols")
        self._preamble = symbols
        self._write(_REG_PREAMBLE_MSB, symbols >> 8)
        self._write(_REG_PREAMBLE_LSB, symbols & 0xFF)

    def set_sync_word(self, word):
        """LoRa sync word: 0x34 for public LoRaWAN networks, 0x12 for private ones."""
        if not 0 <= word <= 0xFF:
            raise ValueError(f"sync word {word!r} is not a byte")
        self._write(_REG_SYNC_WORD, word)

    def set_invert_iq(self, rx=None, tx=None):
        """IQ inversion for reception and transmission; applied at the next receive/send."""
        if rx is not None:
            self._iq_rx = bool(rx)
        if tx is not None:
            self._iq_tx = bool(tx)

    def set_tx_power(self, dbm, pa_boost=True):
        """Output power: PA_BOOST 2..17 dBm or 18..20 dBm (PaDac high power), RFO -4..15 dBm.

        Also sets a matching over-current limit (100 mA, 140 mA at +18..20 dBm); call
        ``set_ocp`` afterwards to override it.
        """
        dbm = round(dbm)
        if pa_boost:
            # DS 5.4.2/5.4.3: Pout = 17 - (15 - OutputPower); with PaDac 0x87, 3 dB more.
            if 2 <= dbm <= 17:
                pa, dac, ocp = _PA_SELECT_PA_BOOST | _MAX_POWER_7 | (dbm - 2), _PA_DAC_DEFAULT, 100
            elif 18 <= dbm <= 20:
                pa, dac, ocp = _PA_SELECT_PA_BOOST | _MAX_POWER_7 | (dbm - 5), _PA_DAC_20DBM, 140
            else:
                raise ValueError(f"PA_BOOST output power {dbm!r} dBm out of range 2..20 dBm")
        else:
            # RFO: Pmax = 10.8 + 0.6 * MaxPower; Pout = Pmax - (15 - OutputPower).
            if 0 <= dbm <= 15:
                pa = _MAX_POWER_7 | dbm
            elif -4 <= dbm < 0:
                pa = dbm + 4  # MaxPower 0: Pmax 10.8 dBm, Pout = OutputPower - 4.2
            else:
                raise ValueError(f"RFO output power {dbm!r} dBm out of range -4..15 dBm")
            dac, ocp = _PA_DAC_DEFAULT, 100
        self._write(_REG_PA_DAC, dac)
        self._write(_REG_PA_CONFIG, pa)
        self.set_ocp(ocp)
        self._tx_power = dbm

    def set_ocp(self, ma):
        """Over-current protection limit in mA (45..240), or None to switch it off (DS 5.4.4)."""
        if ma is None:
            self._write(_REG_OCP, 0x0B)  # OcpOn = 0, trim left at its reset value
            return
        if 45 <= ma <= 120:
            trim = (ma - 45) // 5  # Imax = 45 + 5 * OcpTrim
        elif 120 < ma <= 240:
            trim = (ma + 30) // 10  # Imax = -30 + 10 * OcpTrim
        else:
            raise ValueError(f"over-current limit {ma!r} mA out of range 45..240 mA")
        self._write(_REG_OCP, _OCP_ON | trim)

    def set_lna_gain(self, gain=None):
        """LNA gain G1 (max) .. G6 (min), or None for automatic gain control (AGC); HF boost on."""
        if gain is None:
            self._mc3 |= _AGC_AUTO_ON
            self._write(_REG_LNA, 0x20 | _LNA_BOOST_HF_ON)
        elif 1 <= gain <= 6:
            self._mc3 &= ~_AGC_AUTO_ON & 0xFF
            self._write(_REG_LNA, (gain << 5) | _LNA_BOOST_HF_ON)
        else:
            raise ValueError(f"LNA gain {gain!r} out of range 1..6 (or None for AGC)")
        self._write(_REG_MODEM_CONFIG3, self._mc3)

    def _apply_ldro(self):
        # DS 4.1.1.6: low data rate optimisation is mandated when a symbol lasts more than 16 ms.
        self._ldro = ldro_required(self._sf, self._bw_hz)
        if self._ldro:
            self._mc3 |= _LOW_DATA_RATE_OPTIMIZE
        else:
            self._mc3 &= ~_LOW_DATA_RATE_OPTIMIZE & 0xFF
        self._write(_REG_MODEM_CONFIG3, self._mc3)

    def _apply_bw_errata(self):
        # Errata 2.1 "Sensitivity optimization with a 500 kHz bandwidth".
        if self._bw_hz == 500000 and self._freq_hz >= 862000000:
            self._write(_REG_HIGH_BW_OPTIMIZE1, 0x02)
            self._write(_REG_HIGH_BW_OPTIMIZE2, 0x64)
        elif self._bw_hz == 500000 and 410000000 <= self._freq_hz <= 525000000:
            self._write(_REG_HIGH_BW_OPTIMIZE1, 0x02)
            self._write(_REG_HIGH_BW_OPTIMIZE2, 0x7F)
        else:
            self._write(_REG_HIGH_BW_OPTIMIZE1, 0x03)

    def _apply_iq(self, tx):
        if tx:
            inverted = self._iq_tx
            reg = _INVERT_IQ_BASE if inverted else _INVERT_IQ_BASE | _INVERT_IQ_TX_OFF
        else:
            inverted = self._iq_rx
            reg = _INVERT_IQ_BASE | _INVERT_IQ_TX_OFF | (_INVERT_IQ_RX if inverted else 0)
        self._write(_REG_INVERT_IQ, reg)
        self._write(_REG_INVERT_IQ2, _INVERT_IQ2_ON if inverted else _INVERT_IQ2_OFF)

    # -- information ------------------------------------------------------------------------------
    def time_on_air_us(self, payload_len):
        """Time on air in us of a ``payload_len``-byte packet with the current settings."""
        return time_on_air_us(
            payload_len,
            self._sf,
            self._bw_hz,
            self._cr,
            self._preamble,
            True,
            self._crc,
            self._ldro,
        )

    # -- modes ------------------------------------------------------------------------------------
    def sleep(self):
        """SLEEP: lowest consumption; registers kept, FIFO contents lost."""
        self._rx_continuous = False
        self._set_mode(_MODE_SLEEP)

    def standby(self):
        """STDBY: oscillator running, ready to transmit or receive quickly."""
        self._rx_continuous = False
        self._set_mode(_MODE_STDBY)

    # -- transmit ---------------------------------------------------------------------------------
    def send(self, payload):
        """Transmit ``payload`` (1..255 bytes), wait for TxDone; returns the time on air in us."""
        n = len(payload)
        if not 1 <= n <= 255:
            raise ValueError(f"payload of {n} bytes: a LoRa packet carries 1..255 bytes")
        toa = self.time_on_air_us(n)
        self._rx_continuous = False
        self._set_mode(_MODE_STDBY)  # the FIFO can only be filled in STDBY (DS 4.1.2.3)
        self._apply_iq(True)
        self._write(_REG_FIFO_ADDR_PTR, _FIFO_TX_BASE)
        self._write_burst(_REG_FIFO, payload)
        self._write(_REG_PAYLOAD_LENGTH, n)
        self._write(_REG_DIO_MAPPING1, _DIO0_TX_DONE)
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        self._irq = False
        self._set_mode(_MODE_TX)
        if self.nap is not None:  # nothing can happen before the last symbol has left
            self._doze(toa // 1000)
        else:
            sleep_us(toa)
        flags = self._wait_irq(_IRQ_TX_DONE, toa // 2000 + 100)
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        if not flags & _IRQ_TX_DONE:
            self._set_mode(_MODE_STDBY)
            raise RadioError(
                f"no TxDone {toa // 2000 + 100} ms after a {toa // 1000} ms transmission should "
                "have ended: check the SX127x supply and its DIO0/SPI wiring"
            )
        self.tx_count += 1
        return toa

    # -- receive ----------------------------------------------------------------------------------
    def receive(self, timeout_ms, symbols=None):
        """Listen once for up to ``timeout_ms``; (payload, rssi_dbm, snr_db) or None on timeout.

        Short windows use RXSINGLE with RegSymbTimeout (at most 1023 symbols; ``symbols`` sets
        it exactly, else it covers ``timeout_ms``); longer ones RXCONTINUOUS with a software
        deadline, extended once if a preamble is being received when it passes. A packet with a
        bad CRC is counted in ``crc_errors`` and never returned.
        """
        if timeout_ms <= 0:
            raise ValueError(f"receive timeout must be positive, got {timeout_ms!r} ms")
        self._prepare_rx()
        tsym = symbol_time_us(self._sf, self._bw_hz)
        if symbols is None:
            symbols = (timeout_ms * 1000 + tsym - 1) // tsym
        guard_ms = self.time_on_air_us(255) // 1000 + 100  # a packet that started just in time
        if 0 < symbols <= _MAX_SYMB_TIMEOUT:
            self._write(_REG_MODEM_CONFIG2, (self._mc2 & 0xFC) | (symbols >> 8))
            self._write(_REG_SYMB_TIMEOUT_LSB, symbols & 0xFF)
            self._set_mode(_MODE_RX_SINGLE)
            # DIO0 signals RxDone only (RxTimeout is on DIO1): once the window has passed, poll
            # RegIrqFlags over SPI for the timeout or a packet that began in the window.
            mask = _IRQ_RX_DONE | _IRQ_RX_TIMEOUT
            window_ms = (symbols * tsym + 999) // 1000
            if self.nap is not None:
                self._doze(window_ms)
                window_ms = 0
            flags = self._wait_irq(mask, window_ms)
            if not flags & mask:
                flags = self._wait_irq(mask, guard_ms, True)
            if flags & _IRQ_RX_DONE:
                pkt = self._take_packet(flags)  # the chip went back to STDBY by itself
            elif flags & _IRQ_RX_TIMEOUT:
                self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
                self.rx_timeouts += 1
                pkt = None
            else:
                self._set_mode(_MODE_STDBY)
                raise RadioError(
                    f"RXSINGLE neither received nor timed out within {timeout_ms + guard_ms} ms: "
                    "check the SX127x supply and SPI wiring"
                )
            return pkt
        self._set_mode(_MODE_RX_CONTINUOUS)
        start = ticks_ms()
        extended = False
        while True:
            left = timeout_ms - ticks_diff(ticks_ms(), start)
            if left <= 0:
                if extended or not self._read(_REG_MODEM_STAT) & _MODEM_STAT_SIGNAL_DETECTED:
                    break
                extended = True  # a packet is arriving: give it the time a full packet takes
                timeout_ms += guard_ms
                continue
            flags = self._wait_irq(_IRQ_RX_DONE, left)
            if flags & _IRQ_RX_DONE:
                pkt = self._take_packet(flags)
                if pkt is not None:
                    self._set_mode(_MODE_STDBY)
                    return pkt
        self._set_mode(_MODE_STDBY)
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        self.rx_timeouts += 1
        return None

    def start_receive(self):
        """Listen continuously (RXCONTINUOUS); fetch packets with ``poll()``."""
        self._prepare_rx()
        self._rx_continuous = True
        self._polls = 0
        self._set_mode(_MODE_RX_CONTINUOUS)

    def on_rx(self, handler):
        """Call ``handler(payload, rssi_dbm, snr_db)`` from ``poll()`` for every good packet."""
        self._handler = handler

    def poll(self):
        """In continuous reception: the next received packet (and run the handler), else None.

        Cheap when nothing happened: with DIO0 wired it only looks at the flag the interrupt set,
        reading RegIrqFlags over SPI every 16th call as a backstop; nothing is allocated.
        """
        if not self._rx_continuous:
            return None
        if self._dio0 is not None and not self._irq:
            self._polls += 1
            if self._polls < _BACKSTOP_POLLS:
                return None
        self._polls = 0
        self._irq = False
        flags = self._read(_REG_IRQ_FLAGS)
        if not flags & _IRQ_RX_DONE:
            return None
        pkt = self._take_packet(flags)
        if pkt is not None and self._handler is not None:
            self._handler(pkt[0], pkt[1], pkt[2])
        return pkt

    def _prepare_rx(self):
        self._set_mode(_MODE_STDBY)
        self._apply_iq(False)
        self._write(_REG_DIO_MAPPING1, _DIO0_RX_DONE)
        self._write(_REG_FIFO_RX_BASE_ADDR, _FIFO_RX_BASE)
        self._write(_REG_FIFO_ADDR_PTR, _FIFO_RX_BASE)
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        self._irq = False

    def _doze(self, ms):
        """Sleep up to ``ms`` through ``nap``; returns early once DIO0 has fired."""
        end = ticks_add(ticks_ms(), ms)
        while not self._irq:
            left = ticks_diff(end, ticks_ms())
            if left <= 0:
                return
            self.nap(left)

    def _wait_irq(self, mask, timeout_ms, spi_poll=False):
        """Poll until a flag in ``mask`` is set or ``timeout_ms`` passes; returns RegIrqFlags.

        With DIO0 wired (and ``spi_poll`` false) each cycle only looks at the flag its interrupt
        set, reading the register every 16 cycles as a backstop; otherwise it reads over SPI.
        """
        start = ticks_ms()
        n = 0
        while True:
            if spi_poll or self._dio0 is None or self._irq or n >= _BACKSTOP_POLLS:
                self._irq = False
                n = 0
                flags = self._read(_REG_IRQ_FLAGS)
                if flags & mask:
                    return flags
            if ticks_diff(ticks_ms(), start) >= timeout_ms:
                return self._read(_REG_IRQ_FLAGS)
            n += 1
            sleep_ms(self._poll_ms)

    def _take_packet(self, flags):
        """Read the packet RxDone announced; None (counted) if its CRC failed. Clears the IRQs."""
        if flags & _IRQ_PAYLOAD_CRC_ERROR:
            self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
            self.crc_errors += 1
            return None
        n = self._read(_REG_RX_NB_BYTES)
        self._write(_REG_FIFO_ADDR_PTR, self._read(_REG_FIFO_RX_CURRENT_ADDR))
        mv = self._rx_mv[:n]
        self._read_burst(_REG_FIFO, mv)
        self._read_burst(_REG_PKT_SNR_VALUE, self._pkt)
        self._write(_REG_IRQ_FLAGS, _IRQ_ALL)
        # DS 5.5.5: SNR = signed PacketSnr / 4 (sign-extended by hand: no struct, no allocation);
        # packet RSSI = -157 + PacketRssi on the HF port, plus the SNR when the SNR is negative.
        snr_q = self._pkt[0]
        if snr_q > 127:
            snr_q -= 256
        rssi = -157 + self._pkt[1]
        if snr_q < 0:
            rssi -= (2 - snr_q) >> 2  # + PacketSnr * 0.25, rounded to the nearest dBm
        snr = snr_q / 4
        self.rx_count += 1
        self.last_rssi = rssi
        self.last_snr = snr
        return bytes(mv), rssi, snr
