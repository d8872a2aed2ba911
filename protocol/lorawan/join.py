"""Over-the-air activation for LoRaWAN 1.0.x: Join-request, Join-accept, session key derivation.

Section numbers cite LoRaWAN 1.0.4 (§6.2.4 Join-request; §6.2.5 Join-accept and session keys).
EUIs are 8 bytes in display order, sent reversed; JoinNonce (AppNonce before 1.0.4),
NetID, DevAddr and DevNonce are ints, sent little-endian; `aes` is the factory of aes.py.

The Join-accept is "encrypted" with AES *decrypt* by the network, so that the device only needs
AES encrypt to recover it (§6.2.5): `build_join_accept` is the network side, `open_join_accept`
the device side.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .cmac import aes_cmac
from .errors import FrameError, MICError
from .frame import MTYPE_JOIN_ACCEPT, MTYPE_JOIN_REQUEST, MTYPE_NAMES, frame_mtype
from .keys import check_eui, check_key
from .wire import check_int, freq_to_field, get_u24, put_u24

_JOIN_REQUEST_LEN = const(23)  # MHDR, JoinEUI(8), DevEUI(8), DevNonce(2), MIC(4)
_JOIN_ACCEPT_LEN = const(17)  # MHDR, JoinNonce(3), NetID(3), DevAddr(4), DLSettings, RxDelay, MIC
_CFLIST_LEN = const(16)
_CFLIST_TYPE_FREQUENCIES = const(0)  # RP002 CFListType 0: a list of channel frequencies
_EU868_CFLIST_CHANNELS = const(5)  # channels 3..7 of EU863-870


def _check_mtype(phy, expected):
    mtype = frame_mtype(phy)
    if mtype != expected:
        raise FrameError(
            "expected a %s, got MType %d (%s)" % (MTYPE_NAMES[expected], mtype, MTYPE_NAMES[mtype])
        )


class JoinRequest:
    """A parsed Join-request: join_eui and dev_eui in display order, dev_nonce an int."""

    def __init__(self, phy, join_eui, dev_eui, dev_nonce, mic):
        self.phy = phy
        self.join_eui = join_eui
        self.dev_eui = dev_eui
        self.dev_nonce = dev_nonce
        self.mic = mic


def build_join_request(aes, appkey, join_eui, dev_eui, dev_nonce):
    """Build a Join-request PHYPayload signed with the AppKey (§6.2.4)."""
    check_key(appkey, "AppKey")
    check_eui(join_eui, "JoinEUI")
    check_eui(dev_eui, "DevEUI")
    check_int(dev_nonce, 0, 0xFFFF, "dev_nonce")
    buf = bytearray(_JOIN_REQUEST_LEN)
    buf[0] = MTYPE_JOIN_REQUEST << 5
    buf[1:9] = bytes(reversed(join_eui))
    buf[9:17] = bytes(reversed(dev_eui))
    struct.pack_into("<H", buf, 17, dev_nonce)
    buf[19:] = aes_cmac(aes, appkey, memoryview(buf)[:19])[:4]
    return bytes(buf)


def parse_join_request(phy):
    """Split a Join-request PHYPayload into its fields; raise FrameError if it is not one."""
    if len(phy) != _JOIN_REQUEST_LEN:
        raise FrameError("a Join-request is 23 bytes, got %d" % len(phy))
    _check_mtype(phy, MTYPE_JOIN_REQUEST)
    return JoinRequest(
        phy,
        bytes(reversed(phy[1:9])),
        bytes(reversed(phy[9:17])),
        phy[17] | (phy[18] << 8),
        bytes(phy[19:23]),
    )


def check_join_request_mic(aes, request, appkey):
    """Raise MICError unless the Join-request's MIC matches the AppKey (§6.2.4)."""
    check_key(appkey, "AppKey")
    if aes_cmac(aes, appkey, memoryview(request.phy)[:19])[:4] != request.mic:
        raise MICError("Join-request MIC mismatch: wrong AppKey or corrupted frame")


class JoinAccept:
    """A decrypted Join-accept: network parameters for the new session."""

    def __init__(self, phy, join_nonce, net_id, devaddr, dl_settings, rx_delay, cflist, mic):
        self.phy = phy  # the decrypted PHYPayload: the MIC covers phy[:-4]
        self.join_nonce = join_nonce
        self.net_id = net_id
        self.devaddr = devaddr
        self.dl_settings = dl_settings
        self.rx_delay = rx_delay  # RxDelay.Del: 0 and 1 both mean 1 s (§5.7)
        self.cflist = cflist  # 16 bytes or None
        self.mic = mic

    @property
    def rx1_dr_offset(self):
        return (self.dl_settings >> 4) & 0x07  # DLSettings bits 6..4

    @property
    def rx2_dr(self):
        return self.dl_settings & 0x0F  # DLSettings bits 3..0

    @property
    def rx1_delay_s(self):
        return (self.rx_delay & 0x0F) or 1


def build_join_accept(
    aes, appkey, join_nonce, net_id, devaddr, rx1_dr_offset=0, rx2_dr=0, rx_delay=1, cflist=None
):
    """Build the encrypted Join-accept PHYPayload the network sends (§6.2.5)."""
    check_key(appkey, "AppKey")
    check_int(join_nonce, 0, 0xFFFFFF, "join_nonce")
    check_int(net_id, 0, 0xFFFFFF, "net_id")
    check_int(devaddr, 0, 0xFFFFFFFF, "devaddr")
    check_int(rx1_dr_offset, 0, 7, "rx1_dr_offset")
    check_int(rx2_dr, 0, 15, "rx2_dr")
    check_int(rx_delay, 0, 15, "rx_delay")
    n = _JOIN_ACCEPT_LEN
    if cflist is not None:
        if len(cflist) != _CFLIST_LEN:
            raise ValueError("CFList must be 16 bytes, got %d" % len(cflist))
        n += _CFLIST_LEN
    buf = bytearray(n)
    buf[0] = MTYPE_JOIN_ACCEPT << 5
    put_u24(buf, 1, join_nonce)
    put_u24(buf, 4, net_id)
    struct.pack_into("<IBB", buf, 7, devaddr, (rx1_dr_offset << 4) | rx2_dr, rx_delay)
    if cflist is not None:
        buf[13:29] = cflist
    buf[n - 4 :] = aes_cmac(aes, appkey, memoryview(buf)[: n - 4])[:4]
    # the network applies AES decrypt, so the device can undo it with AES encrypt
    return bytes(buf[:1]) + aes(appkey).decrypt(memoryview(buf)[1:])


def decrypt_join_accept(aes, appkey, phy):
    """Undo the Join-accept encryption (AES encrypt, §6.2.5): return the plaintext PHYPayload."""
    check_key(appkey, "AppKey")
    n = len(phy)
    if n != _JOIN_ACCEPT_LEN and n != _JOIN_ACCEPT_LEN + _CFLIST_LEN:
        raise FrameError("a Join-accept is 17 or 33 bytes, got %d" % n)
    _check_mtype(phy, MTYPE_JOIN_ACCEPT)
    return bytes(phy[:1]) + aes(appkey).encrypt(memoryview(phy)[1:])


def parse_join_accept(plain):
    """Split a decrypted Join-accept PHYPayload into its fields (MIC not yet checked)."""
    n = len(plain)
    if n != _JOIN_ACCEPT_LEN and n != _JOIN_ACCEPT_LEN + _CFLIST_LEN:
        raise FrameError("a Join-accept is 17 or 33 bytes, got %d" % n)
    _check_mtype(plain, MTYPE_JOIN_ACCEPT)
    devaddr, dl_settings, rx_delay = struct.unpack_from("<IBB", plain, 7)
    return JoinAccept(
        plain,
        get_u24(plain, 1),
        get_u24(plain, 4),
        devaddr,
        dl_settings,
        rx_delay,
        bytes(plain[13:29]) if n > _JOIN_ACCEPT_LEN else None,
        bytes(plain[n - 4 :]),
    )


def check_join_accept_mic(aes, accept, appkey):
    """Raise MICError unless the Join-accept's MIC matches the AppKey (§6.2.5)."""
    check_key(appkey, "AppKey")
    n = len(accept.phy)
    if aes_cmac(aes, appkey, memoryview(accept.phy)[: n - 4])[:4] != accept.mic:
        raise MICError("Join-accept MIC mismatch: wrong AppKey or corrupted frame")


def open_join_accept(aes, appkey, phy):
    """Device side in one call: decrypt, parse and MIC-check a received Join-accept."""
    accept = parse_join_accept(decrypt_join_accept(aes, appkey, phy))
    check_join_accept_mic(aes, accept, appkey)
    return accept


def derive_session_keys(aes, appkey, join_nonce, net_id, dev_nonce):
    """Return (NwkSKey, AppSKey) = AES(AppKey, 0x01|0x02 | JoinNonce | NetID | DevNonce | pad)."""
    check_key(appkey, "AppKey")
    check_int(join_nonce, 0, 0xFFFFFF, "join_nonce")
    check_int(net_id, 0, 0xFFFFFF, "net_id")
    check_int(dev_nonce, 0, 0xFFFF, "dev_nonce")
    buf = bytearray(32)  # two blocks, one cipher call
    buf[0] = 0x01
    put_u24(buf, 1, join_nonce)
    put_u24(buf, 4, net_id)
    struct.pack_into("<H", buf, 7, dev_nonce)
    buf[16:25] = buf[0:9]
    buf[16] = 0x02
    keys = aes(appkey).encrypt(buf)
    return bytes(keys[:16]), bytes(keys[16:])


def encode_cflist_eu868(freqs_hz):
    """CFList for EU863-870: up to 5 extra channel frequencies in Hz (0 = no channel), type 0."""
    if len(freqs_hz) > _EU868_CFLIST_CHANNELS:
        raise ValueError("an EU868 CFList holds at most 5 frequencies, got %d" % len(freqs_hz))
    buf = bytearray(_CFLIST_LEN)  # byte 15 = CFListType 0
    for i in range(len(freqs_hz)):
        put_u24(buf, 3 * i, freq_to_field(freqs_hz[i], "CFList frequency %d" % i))
    return bytes(buf)


def decode_cflist_eu868(cflist):
    """The 5 frequencies in Hz of an EU863-870 CFList (0 where a channel is absent)."""
    if len(cflist) != _CFLIST_LEN:
        raise FrameError("a CFList is 16 bytes, got %d" % len(cflist))
    if cflist[15] != _CFLIST_TYPE_FREQUENCIES:
        raise FrameError("CFListType %d is not a frequency list (EU868 uses 0)" % cflist[15])
    return [get_u24(cflist, 3 * i) * 100 for i in range(_EU868_CFLIST_CHANNELS)]
