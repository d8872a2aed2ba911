"""The LoRaWAN 1.0.x end device (Class A, EU868): uplinks, RX1/RX2 windows, duty cycle.

Channel choice honours the ETSI sub-band duty cycle: after a transmission of T ms on a sub-band
with duty cycle d, that sub-band stays closed for T/d - T ms (RP002 §2.1.x, EN 300 220).
"""

import random
import time

from protocol import lorawan
from protocol import region_eu868 as region
from protocol.airtime import symbol_time_us

_RX_MARGIN_MS = 20  # open the receiver this early: crystal drift and our own latency


class Session:
    """An active session: DevAddr and session keys (ABP or after an OTAA join)."""

    def __init__(self, dev_addr, nwk_s_key, app_s_key):
        self.dev_addr = dev_addr
        self.nwk_s_key = nwk_s_key
        self.app_s_key = app_s_key


class Downlink:
    """What arrived in a receive window after MIC check and decryption."""

    def __init__(self, fport, payload, fopts, ack, fpending, window):
        self.fport = fport
        self.payload = payload
        self.fopts = fopts
        self.ack = ack
        self.fpending = fpending
        self.window = window


class EndDevice:
    """Sends uplinks and listens in the receive windows for one session."""

    def __init__(self, radio, session, state, channels, sf=7, tx_power_dbm=14, aes=None):
        self.radio = radio
        self.session = session
        self.state = state
        self.channels = channels
        self.sf = sf
        self.tx_power_dbm = tx_power_dbm
        self.aes = aes or lorawan.default_aes()
        self.rx2_freq = region.RX2_FREQ_HZ
        self.rx2_sf = region.data_rate(region.RX2_DR)[0]
        self.rx1_delay_ms = region.RECEIVE_DELAY1_S * 1000
        radio.set_invert_iq(rx=True, tx=False)  # uplinks plain, downlinks inverted (§... RP002)
        radio.set_tx_power(tx_power_dbm)
        self._band_free = {}  # sub-band -> ticks_ms when it reopens
        self.pending_fopts = b""
        self.last_rssi = 0
        self.last_snr = 0

    def _pick_channel(self):
        """A random enabled channel whose sub-band is open now, or the wait in ms."""
        now = time.ticks_ms()
        open_ = []
        wait = None
        for f in self.channels:
            band = region.sub_band(f)
            reopen = self._band_free.get(band)
            left = 0 if reopen is None else time.ticks_diff(reopen, now)
            if left <= 0:
                open_.append(f)
            elif wait is None or left < wait:
                wait = left
        if open_:
            return open_[random.getrandbits(8) % len(open_)], 0
        return None, wait

    def send(self, fport, payload, confirmed=False):
        """Transmit one uplink and run the receive windows; returns a Downlink or None."""
        freq, wait = self._pick_channel()
        if freq is None:
            time.sleep_ms(wait)
            freq, _ = self._pick_channel()
        fcnt = self.state.next_fcnt_up()
        s = self.session
        mtype = lorawan.MTYPE_CONFIRMED_UP if confirmed else lorawan.MTYPE_UNCONFIRMED_UP
        phy = lorawan.build_data_frame(
            self.aes, mtype, s.dev_addr, fcnt, fport, payload, s.nwk_s_key, s.app_s_key,
            fopts=self.pending_fopts,
        )
        self.pending_fopts = b""
        self.radio.set_frequency(freq)
        self.radio.set_spreading_factor(self.sf)
        airtime_us = self.radio.send(phy)
        tx_end = time.ticks_ms()
        off_ms = region.time_off_us(freq, airtime_us) // 1000
        self._band_free[region.sub_band(freq)] = time.ticks_add(tx_end, off_ms)
        dl = self._rx_window(tx_end, self.rx1_delay_ms, freq, self.sf, 1)
        if dl is None:
            dl = self._rx_window(tx_end, self.rx1_delay_ms + 1000, self.rx2_freq, self.rx2_sf, 2)
        self.radio.sleep()
        return dl

    def _rx_window(self, tx_end, delay_ms, freq, sf, window):
        left = time.ticks_diff(time.ticks_add(tx_end, delay_ms - _RX_MARGIN_MS), time.ticks_ms())
        if left > 0:
            time.sleep_ms(left)
        self.radio.set_frequency(freq)
        self.radio.set_spreading_factor(sf)
        got = self.radio.receive(_RX_MARGIN_MS * 2 + symbol_time_us(sf, 125000) * 8 // 1000)
        if got is None:
            return None
        phy, self.last_rssi, self.last_snr = got
        return self._accept_downlink(phy, window)

    def _accept_downlink(self, phy, window):
        try:
            f = lorawan.parse_frame(phy)
        except ValueError:
            return None
        if f.mtype not in (lorawan.MTYPE_UNCONFIRMED_DOWN, lorawan.MTYPE_CONFIRMED_DOWN):
            return None
        if f.devaddr != self.session.dev_addr:
            return None
        try:
            fcnt = lorawan.fcnt32_from16(self.state.fcnt_down - 1, f.fcnt16)
            if fcnt < self.state.fcnt_down:
                return None
            lorawan.check_mic(self.aes, f, self.session.nwk_s_key, fcnt)
        except ValueError:
            return None
        self.state.set_fcnt_down(fcnt + 1)
        payload = b""
        if f.fport is not None:
            key = self.session.nwk_s_key if f.fport == 0 else self.session.app_s_key
            payload = lorawan.decrypt_payload(self.aes, f, key, fcnt)
        return Downlink(f.fport, payload, f.fopts, f.ack, f.fpending, window)
