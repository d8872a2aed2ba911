"""The LoRaWAN 1.0.4 end device for EU868: OTAA join, uplinks, Class A receive windows RX1/RX2,
Class C continuous reception on the RX2 parameters, confirmed frames, MAC commands, duty cycle.

Section numbers cite LoRaWAN L2 1.0.4 (TS001-1.0.4) and RP002-1.0.4 for EU868. Time for the
duty-cycle accounting is the node's uptime in ms (``now()``, from app.py); waits go through
``sleep(ms)``, which feeds the watchdog.
"""

import random
import time

from firmware import mac as macmod
from protocol import lorawan
from protocol import region_eu868 as region
from protocol.airtime import symbol_time_us

_RX_MIN_SYMBOLS = 6  # preamble symbols the SX127x needs to detect a downlink (LoRaMac-node)
_RX_ERROR_MS = 10  # worst error of our window timing either way: ms ticks, light-sleep clock drift
_CONFIRMED_TRIES = 4  # transmissions of a confirmed uplink at most
_ACK_TIMEOUT_MS = 2000  # RP002 ACK_TIMEOUT 2 s +- 1 s between confirmed retransmissions
_JOIN_JITTER_MS = 8000  # random extra wait between Join-requests (1.0.4 §7)
_CLASS_C_POLL_MS = 100


class Downlink:
    """An application downlink that passed MIC and counter checks, decrypted."""

    def __init__(self, fport, payload, confirmed, window, rssi, snr):
        self.fport = fport
        self.payload = payload
        self.confirmed = confirmed
        self.window = window  # 1, 2, or 0 for Class C continuous reception
        self.rssi = rssi
        self.snr = snr


class EndDevice:
    """One node's LoRaWAN stack on an SX127x radio."""

    def __init__(self, radio, state, dc, now, sleep, tx_cap_dbm=14, battery=None, aes=None,
                 log=None, adr=True):
        self.radio = radio
        self.state = state
        self.dc = dc
        self.now = now
        self.sleep = sleep
        self.tx_cap_dbm = tx_cap_dbm
        self.battery = battery or (lambda: 255)
        self.aes = aes or lorawan.default_aes()
        self.log = log or (lambda *a: None)
        self.session = None  # (DevAddr, NwkSKey, AppSKey)
        self.mac = macmod.MacSettings()
        self.answers = b""  # MAC answers for the next uplink's FOpts
        self.sticky = b""  # answers repeated until a downlink arrives
        self.ack_due = False  # a confirmed downlink waits for the ACK bit of our next uplink
        self.ctx = macmod.MacContext()
        self.boot_ms = now()
        self.last_rssi = 0
        self.last_snr = 0
        self.dropped = 0  # downlinks refused: not ours, bad MIC, replayed counter
        self.on_frame = None  # called for every downlink accepted (the network is reachable)
        self.adr = adr  # the network may steer data rate and power (FCtrl.ADR)
        self.adr_ack_cnt = 0  # uplinks since the last downlink (kept across deep sleep by app)
        self._rxc = False  # the radio is in Class C continuous reception
        radio.set_invert_iq(rx=True, tx=False)  # uplinks plain, downlinks inverted IQ

    # -- session ----------------------------------------------------------------------------------
    def activate(self, dev_addr, nwk_s_key, app_s_key, mac_dict=None, dr=5):
        """Use a session (ABP keys, or one restored from the state)."""
        self.session = (dev_addr, nwk_s_key, app_s_key)
        self.mac = macmod.MacSettings(dr, d=mac_dict)
        self.dc.max_dcycle = self.mac.max_dcycle

    def _save_mac(self):
        self.state.mac = self.mac.to_dict()
        self.dc.max_dcycle = self.mac.max_dcycle
        self.state.save()

    def join(self, dev_eui, join_eui, app_key, dr=5):
        """One OTAA attempt (§6.2): Join-request, then the two join-accept windows.

        Waits first for the duty cycle, the join back-off of §7 and a random jitter. Returns
        True once a valid Join-accept set up the session (persisted by state.new_session).
        """
        chans = region.DEFAULT_CHANNELS_HZ
        _, wait = self.dc.pick(chans, self.now(), 0, True)
        jitter = random.getrandbits(16) % _JOIN_JITTER_MS
        self.sleep((wait or 0) + jitter)
        nonce = self.state.next_dev_nonce()
        phy = lorawan.build_join_request(self.aes, app_key, join_eui, dev_eui, nonce)
        freq, tx_end = self._tx(phy, dr, chans, True)
        self.log("join-request devnonce=%d freq=%d dr=%d" % (nonce, freq, dr))
        windows = ((region.JOIN_ACCEPT_DELAY1_S * 1000, freq, region.rx1_dr(dr, 0)),
                   (region.JOIN_ACCEPT_DELAY2_S * 1000, region.RX2_FREQ_HZ, region.RX2_DR))
        for delay, f, rdr in windows:
            got = self._window(tx_end, delay, f, rdr)
            if got is None:
                continue
            try:
                acc = lorawan.open_join_accept(self.aes, app_key, got[0])
            except ValueError:
                self.dropped += 1
                continue
            if acc.join_nonce <= self.state.join_nonce:
                self.log("join-accept refused: JoinNonce %d not above %d"
                         % (acc.join_nonce, self.state.join_nonce))
                self.dropped += 1
                continue
            nwk, app = lorawan.derive_session_keys(self.aes, app_key, acc.join_nonce,
                                                   acc.net_id, nonce)
            m = macmod.MacSettings(dr)
            if acc.rx1_dr_offset <= region.MAX_RX1_DR_OFFSET:
                m.rx1_dr_offset = acc.rx1_dr_offset
            if acc.rx2_dr <= region.MAX_DR:
                m.rx2_dr = acc.rx2_dr
            m.rx1_delay_s = acc.rx1_delay_s
            if acc.cflist is not None:
                try:
                    m.add_cflist(lorawan.decode_cflist_eu868(acc.cflist))
                except ValueError:
                    pass  # a CFList type we do not know: keep the default channels
            self.session = (acc.devaddr, nwk, app)
            self.mac = m
            self.dc.max_dcycle = 0
            self.answers = self.sticky = b""
            self.ack_due = False
            self.state.new_session(
                {"dev_addr": acc.devaddr, "nwk_s_key": nwk.hex(), "app_s_key": app.hex()},
                m.to_dict(), acc.join_nonce)
            self.log("joined devaddr=%08x rx1_delay=%d rx2_dr=%d channels=%d" % (
                acc.devaddr, m.rx1_delay_s, m.rx2_dr, len(m.enabled())))
            return True
        return False

    # -- uplinks ----------------------------------------------------------------------------------
    def link_check(self):
        """Ask for a LinkCheckAns in the next uplink (§5.2)."""
        self.answers += macmod.link_check_req()

    def send(self, fport, payload, confirmed=False):
        """Send one uplink (NbTrans times, or until ACKed if confirmed) and run its windows.

        -> (downlinks, acked): application downlinks received; for a confirmed uplink whether
        the network acknowledged it (always False for unconfirmed ones).
        """
        if self.session is None:
            raise ValueError("no session: join or activate first")
        addr, nwk, app = self.session
        fcnt = self.state.next_fcnt_up()
        fopts = macmod.fit_fopts(self.sticky)[0]  # sticky ones stay until a downlink comes
        more, self.answers = macmod.fit_fopts(self.answers, 15 - len(fopts))
        fopts += more
        ack_req = False
        if self.adr:
            ack_req, changed = macmod.adr_backoff(self.mac, self.adr_ack_cnt)
            if changed:
                self._save_mac()
        self.adr_ack_cnt += 1
        mtype = lorawan.MTYPE_CONFIRMED_UP if confirmed else lorawan.MTYPE_UNCONFIRMED_UP
        phy = lorawan.build_data_frame(self.aes, mtype, addr, fcnt, fport, payload, nwk, app,
                                       fopts=fopts, ack=self.ack_due, adr=self.adr,
                                       adr_ack_req=ack_req)
        self.ack_due = False
        tries = _CONFIRMED_TRIES if confirmed else max(1, self.mac.nb_trans)
        dr = self.mac.dr
        got = []
        acked = False
        for n in range(tries):
            freqs = self.mac.enabled(dr) or list(region.DEFAULT_CHANNELS_HZ)
            freq, tx_end = self._tx(phy, dr, freqs)
            self.log("uplink fcnt=%d fport=%d bytes=%d freq=%d dr=%d%s try=%d" % (
                fcnt, fport, len(payload), freq, dr, " confirmed" if confirmed else "", n + 1))
            heard, ack = self._class_a(tx_end, freq, dr, got)
            if ack:
                acked = True
            if heard and (not confirmed or acked):
                break  # any reception in a Class A window ends repeats (TR007 4.9)
            if confirmed and n + 1 < tries:
                self.sleep(_ACK_TIMEOUT_MS - 1000 + random.getrandbits(16) % 2001)
        self.radio.sleep()
        return got, acked

    def _tx(self, phy, dr, freqs, join=False):
        self._rxc = False  # the radio leaves continuous reception to transmit
        freq, wait = self.dc.pick(freqs, self.now(), random.getrandbits(16), join)
        if freq is None:
            self.log("duty cycle: waiting %d ms" % wait)
            self.sleep(wait)
            freq, _ = self.dc.pick(freqs, self.now(), random.getrandbits(16), join)
        r = self._tune(freq, dr)
        r.set_tx_power(self.mac.tx_power_dbm(self.tx_cap_dbm))
        airtime_us = r.send(phy)
        tx_end = time.ticks_ms()
        self.dc.sent(freq, airtime_us, self.now(),
                     self.now() - self.boot_ms if join else None)
        return freq, tx_end

    def _tune(self, freq, dr):
        """The radio, set to ``freq`` and data rate ``dr``."""
        sf, bw = region.data_rate(dr)
        r = self.radio
        r.set_frequency(freq)
        r.set_spreading_factor(sf)
        r.set_bandwidth(bw)
        return r

    def _window(self, tx_end, delay_ms, freq, dr):
        """Listen in one receive window opening delay_ms after tx_end: (phy, rssi, snr) or None.

        The radio sleeps until then; the window stays open only the symbols preamble detection
        needs (rx_window), then the chip's RxTimeout closes it.
        """
        sf, bw = region.data_rate(dr)
        symbols, early_us = rx_window(sf, bw)
        left = time.ticks_diff(time.ticks_add(tx_end, delay_ms - early_us // 1000), time.ticks_ms())
        if left > 0:
            self.radio.sleep()  # registers kept, 0.2 uA instead of 1.6 mA in standby
            self.sleep(left)  # feeds the watchdog (RXTimingSetup allows up to 15 s)
        got = self._tune(freq, dr).receive((symbols * symbol_time_us(sf, bw) + 999) // 1000, symbols)
        if got is not None:
            self.last_rssi, self.last_snr = got[1], got[2]
        return got

    def _class_a(self, tx_end, freq, dr, out):
        """RX1 then, if nothing for us came, RX2 (§3.3). -> (heard anything for us, ACK seen)."""
        m = self.mac
        d1 = m.rx1_delay_s * 1000
        windows = ((d1, m.downlink_freq(freq), region.rx1_dr(dr, m.rx1_dr_offset), 1),
                   (d1 + 1000, m.rx2_freq, m.rx2_dr, 2))
        for delay, f, rdr, w in windows:
            got = self._window(tx_end, delay, f, rdr)
            if got is not None:
                ok, ack = self._accept(got[0], w, got[1], got[2], out)
                if ok:
                    return True, ack
        return False, False

    # -- Class C ----------------------------------------------------------------------------------
    def listen(self, ms):
        """Class C: receive continuously on the RX2 frequency and data rate for ms (§6).

        -> application downlinks received meanwhile.
        """
        r = self.radio
        if not self._rxc:  # stay in RXCONTINUOUS between calls: a restart loses a packet
            self._tune(self.mac.rx2_freq, self.mac.rx2_dr).start_receive()
            self._rxc = True
        out = []
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            pkt = r.poll()
            if pkt is not None:
                self.last_rssi, self.last_snr = pkt[1], pkt[2]
                self._accept(pkt[0], 0, pkt[1], pkt[2], out)
                if out:
                    break  # let the application act at once
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                break
            time.sleep_ms(min(left, _CLASS_C_POLL_MS))
        return out

    # -- downlinks --------------------------------------------------------------------------------
    def _accept(self, phy, window, rssi, snr, out):
        """Check and take one received frame. -> (it was ours, its ACK bit)."""
        try:
            f = lorawan.parse_frame(phy)
            if f.mtype not in (lorawan.MTYPE_UNCONFIRMED_DOWN, lorawan.MTYPE_CONFIRMED_DOWN):
                raise ValueError("not a downlink")
            addr, nwk, app = self.session
            if f.devaddr != addr:
                raise ValueError("another device's frame")
            fcnt = lorawan.fcnt32_from16(self.state.fcnt_down - 1, f.fcnt16)
            if fcnt < self.state.fcnt_down:
                raise ValueError("replayed downlink counter")
            lorawan.check_mic(self.aes, f, nwk, fcnt)
            payload = b""
            if f.fport is not None:
                payload = lorawan.decrypt_payload(self.aes, f, nwk if f.fport == 0 else app, fcnt)
        except ValueError as exc:
            self.dropped += 1
            self.log("downlink refused: %s" % exc)
            return False, False
        self.state.set_fcnt_down(fcnt + 1)
        self.adr_ack_cnt = 0
        if self.on_frame is not None:
            self.on_frame()
        self.sticky = b""  # a downlink came: the network has our sticky answers
        confirmed = f.mtype == lorawan.MTYPE_CONFIRMED_DOWN
        if confirmed:
            self.ack_due = True
        self.ctx.snr = snr
        self.ctx.battery = self.battery()
        for cmds in (f.fopts, payload if f.fport == 0 else b""):
            if cmds:
                try:
                    answers, sticky, changed = macmod.process(self.mac, cmds, self.ctx)
                except Exception as exc:  # noqa: BLE001 - never let the air crash the node
                    self.log("MAC commands refused: %r" % (exc,))
                    continue
                self.answers += answers
                self.sticky += sticky
                if changed:
                    self._save_mac()
        if self.ctx.link_check is not None:
            self.log("link check: margin=%d dB gateways=%d" % self.ctx.link_check)
        self.log("downlink fcnt=%d fport=%s window=%d rssi=%d%s" % (
            fcnt, f.fport, window, rssi, " confirmed" if confirmed else ""))
        if f.fport:
            out.append(Downlink(f.fport, payload, confirmed, window, rssi, snr))
        return True, f.ack


def rx_window(sf, bw):
    """(symbols, us the window opens before the downlink's nominal start) of a receive window.

    Centred on the middle of the downlink's 8-symbol preamble and wide enough for
    _RX_ERROR_MS of timing error either way, at least _RX_MIN_SYMBOLS: the computation of
    Semtech's LoRaMac-node (RegionCommonComputeRxWindowParameters). A negative lead opens late.
    """
    tsym = symbol_time_us(sf, bw)
    need = (2 * _RX_MIN_SYMBOLS - 8) * tsym + 2000 * _RX_ERROR_MS
    symbols = max((need + tsym - 1) // tsym, _RX_MIN_SYMBOLS)
    return symbols, symbols * tsym // 2 - 4 * tsym
