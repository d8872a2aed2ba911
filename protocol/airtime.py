"""LoRa time on air, exactly as Semtech's formula gives it, in integer microseconds.

Source of the formula: SX1276/77/78/79 Datasheet rev 7, section 4.1.1.7 "Time on air", and
Semtech AN1200.13 "LoRa Modem Designer's Guide", section 4:

    T_sym      = 2**SF / BW
    T_preamble = (n_preamble + 4.25) * T_sym
    n_payload  = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
    T_packet   = T_preamble + n_payload * T_sym

PL payload bytes, IH = 1 for implicit header, CRC = 1 when the payload CRC is on, DE = 1 with low
data rate optimisation, CR = 1..4 for coding rate 4/5..4/8 (the value of the CodingRate register
field; this is the meaning of ``cr`` everywhere in cityedge).

Every bandwidth of the chip is 500 kHz divided by an integer (the 7.8 kHz setting is really
7812.5 Hz, 41.7 kHz is 41666.7 Hz, ...), so T_sym = 2**SF * 2 * divisor microseconds exactly and the
whole packet time is an exact integer number of microseconds: no floating point, no rounding.

Low data rate optimisation is "mandated when the symbol duration exceeds 16 ms" (DS 4.1.1.6):
SF11 and SF12 at 125 kHz, SF12 at 250 kHz. ``ldro=None`` applies that rule; True/False force it.

Checked against published values (see tests/test_airtime.py for the full list):
- avbentem/airtime-calculator src/lora/Airtime.test.ts (itself compared with the TTN airtime
  spreadsheet): 14 bytes SF7/125 = 46.336 ms, SF7/250 = 23.168 ms, SF11/125 = 659.456 ms, ...
- the "AN1200.13 formulas" airtime spreadsheet: 13 bytes SF9/125 = 164.864 ms (28 payload symbols);
- tanupoo/lorawan_toa tests: 64 bytes SF12/125 = 2465.792 ms without and 2793.472 ms with
  low data rate optimisation, 255 bytes SF7/500 = 99.904 ms.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MIN_SF = const(6)
_MAX_SF = const(12)
_LDRO_SYMBOL_US = const(16000)  # DS 4.1.1.6: mandated above 16 ms per symbol

# Bandwidth in Hz (as the chip's settings are usually named) -> divisor of 500 kHz.
# DS Table "RegModemConfig1" Bw field: 7.8, 10.4, 15.6, 20.8, 31.25, 41.7, 62.5, 125, 250, 500 kHz.
_BW_DIVISOR = {
    7800: 64,
    10400: 48,
    15600: 32,
    20800: 24,
    31250: 16,
    41700: 12,
    62500: 8,
    125000: 4,
    250000: 2,
    500000: 1,
}

BANDWIDTHS_HZ = (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)


def _divisor(bw_hz):
    d = _BW_DIVISOR.get(bw_hz)
    if d is None:
        raise ValueError(
            "bandwidth {!r} Hz is not a LoRa bandwidth (one of {})".format(
                bw_hz, ", ".join(str(b) for b in BANDWIDTHS_HZ)
            )
        )
    return d


def _check_sf(sf):
    if not _MIN_SF <= sf <= _MAX_SF:
        raise ValueError(f"spreading factor {sf!r} out of range SF6..SF12")


def symbol_time_us(sf, bw_hz=125000):
    """Duration of one LoRa symbol, 2**SF / BW, in microseconds (exact)."""
    _check_sf(sf)
    return (2 << sf) * _divisor(bw_hz)


def ldro_required(sf, bw_hz=125000):
    """True when the symbol time exceeds 16 ms, where low data rate optimisation is mandated."""
    return symbol_time_us(sf, bw_hz) > _LDRO_SYMBOL_US


def payload_symbols(payload_len, sf, bw_hz=125000, cr=1, explicit_header=True, crc=True, ldro=None):
    """Number of symbols after the preamble (header + payload + CRC), per the formula above."""
    _check_sf(sf)
    if not 1 <= cr <= 4:
        raise ValueError(f"coding rate index {cr!r} out of range 1..4 (4/5..4/8)")
    if not 0 <= payload_len <= 255:
        raise ValueError(f"payload length {payload_len!r} out of range 0..255 bytes")
    if ldro is None:
        ldro = ldro_required(sf, bw_hz)
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - (0 if explicit_header else 20)
    den = 4 * (sf - (2 if ldro else 0))
    blocks = (num + den - 1) // den if num > 0 else 0  # ceil, and max(.., 0)
    return 8 + blocks * (cr + 4)


def preamble_time_us(sf, bw_hz=125000, preamble=8):
    """Preamble plus sync word and start-of-frame delimiter: (n_preamble + 4.25) symbols, in us."""
    if not 0 <= preamble <= 65535:
        raise ValueError(f"preamble length {preamble!r} out of range 0..65535 symbols")
    return (4 * preamble + 17) * symbol_time_us(sf, bw_hz) // 4


def time_on_air_us(
    payload_len, sf, bw_hz=125000, cr=1, preamble=8, explicit_header=True, crc=True, ldro=None
):
    """Time on air of one LoRa packet in integer microseconds (exact, see the module docstring)."""
    n_payload = payload_symbols(payload_len, sf, bw_hz, cr, explicit_header, crc, ldro)
    if not 0 <= preamble <= 65535:
        raise ValueError(f"preamble length {preamble!r} out of range 0..65535 symbols")
    # (n_preamble + 4.25 + n_payload) * T_sym, counted in quarter symbols so it stays integral.
    return (4 * (preamble + n_payload) + 17) * symbol_time_us(sf, bw_hz) // 4
