"""LoRaWAN 1.0.x data frames: build, parse, MIC, FRMPayload encryption, FCnt reconstruction.

Section numbers cite LoRaWAN 1.0.4 (TS001-1.0.4, "L2"). Layout of a data frame (§4.1, §4.3):

    MHDR(1) | DevAddr(4, LE) FCtrl(1) FCnt(2, LE) FOpts(0..15) | [FPort(1) FRMPayload] | MIC(4)

DevAddr is an int, keys are 16 bytes (see keys.py); `aes` is the factory of aes.py.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .cmac import aes_cmac
from .errors import FrameError, MICError
from .keys import check_key
from .wire import check_int

# MType, MHDR bits 7..5 (§4.2.1, Table 1)
MTYPE_JOIN_REQUEST = const(0)
MTYPE_JOIN_ACCEPT = const(1)
MTYPE_UNCONFIRMED_UP = const(2)
MTYPE_UNCONFIRMED_DOWN = const(3)
MTYPE_CONFIRMED_UP = const(4)
MTYPE_CONFIRMED_DOWN = const(5)
MTYPE_PROPRIETARY = const(7)

MTYPE_NAMES = (
    "Join-request",
    "Join-accept",
    "Unconfirmed Data Up",
    "Unconfirmed Data Down",
    "Confirmed Data Up",
    "Confirmed Data Down",
    "RFU",
    "Proprietary",
)

_MAJOR_MASK = const(0x03)  # MHDR bits 1..0; 0 = LoRaWAN R1 (§4.2.2)

# FCtrl bits (§4.3.1): uplink ADR ADRACKReq ACK ClassB FOptsLen[3:0];
#                      downlink ADR RFU ACK FPending FOptsLen[3:0]
_FCTRL_ADR = const(0x80)
_FCTRL_ADR_ACK_REQ = const(0x40)
_FCTRL_ACK = const(0x20)
_FCTRL_BIT4 = const(0x10)  # ClassB on uplinks, FPending on downlinks
_FOPTS_LEN_MASK = const(0x0F)

_MIC_LEN = const(4)
_FHDR_END = const(8)  # MHDR + DevAddr + FCtrl + FCnt
_MIN_DATA_LEN = const(12)  # MHDR + FHDR without FOpts + MIC
_MAX_PHY_LEN = const(255)  # the longest LoRa payload a radio can carry

# B0 (§4.4) and A_i (§4.3.3.1) blocks: tag, 4 zero bytes, Dir, DevAddr, FCnt(32), 0x00, last byte
_BLOCK_FMT = "<B4xBIIxB"


def frame_mtype(phy):
    """Return the MType of a PHYPayload after checking it has an MHDR with Major = LoRaWAN R1."""
    if len(phy) < 1:
        raise FrameError("empty frame: no MHDR")
    mhdr = phy[0]
    if mhdr & _MAJOR_MASK:
        raise FrameError("MHDR major version %d is not LoRaWAN R1 (0)" % (mhdr & _MAJOR_MASK))
    return mhdr >> 5


def _is_data(mtype):
    return MTYPE_UNCONFIRMED_UP <= mtype <= MTYPE_CONFIRMED_DOWN


def _is_uplink(mtype):
    return mtype == MTYPE_UNCONFIRMED_UP or mtype == MTYPE_CONFIRMED_UP


class DataFrame:
    """A parsed data frame; FRMPayload is still encrypted and the MIC not yet checked."""

    def __init__(self, phy, mtype, devaddr, fctrl, fcnt16, fopts, fport, frm_payload, mic):
        self.phy = phy  # the whole PHYPayload: the MIC covers phy[:-4]
        self.mtype = mtype
        self.devaddr = devaddr
        self.fctrl = fctrl
        self.fcnt16 = fcnt16
        self.fopts = fopts
        self.fport = fport  # None when the frame has no FPort (and so no FRMPayload)
        self.frm_payload = frm_payload
        self.mic = mic

    @property
    def uplink(self):
        return _is_uplink(self.mtype)

    @property
    def confirmed(self):
        return self.mtype >= MTYPE_CONFIRMED_UP

    @property
    def adr(self):
        return bool(self.fctrl & _FCTRL_ADR)

    @property
    def adr_ack_req(self):
        """ADRACKReq, uplink only (the bit is RFU on downlinks)."""
        return self.uplink and bool(self.fctrl & _FCTRL_ADR_ACK_REQ)

    @property
    def ack(self):
        return bool(self.fctrl & _FCTRL_ACK)

    @property
    def fpending(self):
        """FPending, downlink only."""
        return not self.uplink and bool(self.fctrl & _FCTRL_BIT4)

    @property
    def class_b(self):
        """ClassB, uplink only."""
        return self.uplink and bool(self.fctrl & _FCTRL_BIT4)

    def __repr__(self):
        return "<DataFrame %s DevAddr %08x FCnt %d FPort %s, %d payload bytes>" % (
            MTYPE_NAMES[self.mtype],
            self.devaddr,
            self.fcnt16,
            self.fport,
            len(self.frm_payload),
        )


def parse_frame(phy):
    """Split a data-frame PHYPayload into its fields; raise FrameError on anything malformed."""
    n = len(phy)
    if n < _MIN_DATA_LEN:
        raise FrameError("frame too short: %d bytes, a data frame has at least 12" % n)
    if n > _MAX_PHY_LEN:
        raise FrameError("frame too long: %d bytes, a LoRa frame has at most 255" % n)
    mtype = frame_mtype(phy)
    if not _is_data(mtype):
        raise FrameError("MType %d (%s) is not a data frame" % (mtype, MTYPE_NAMES[mtype]))
    devaddr, fctrl, fcnt16 = struct.unpack_from("<IBH", phy, 1)
    fopts_end = _FHDR_END + (fctrl & _FOPTS_LEN_MASK)
    mic_at = n - _MIC_LEN
    if fopts_end > mic_at:
        raise FrameError(
            "FOptsLen %d runs past the end of a %d-byte frame" % (fctrl & _FOPTS_LEN_MASK, n)
        )
    if fopts_end < mic_at:
        fport = phy[fopts_end]
        if fport == 0 and fopts_end > _FHDR_END:
            # §4.3.1.6: MAC commands in FOpts forbid FPort 0
            raise FrameError("MAC commands in FOpts and FPort 0 in one frame: not allowed")
        frm_payload = bytes(phy[fopts_end + 1 : mic_at])
    else:
        fport = None
        frm_payload = b""
    return DataFrame(
        phy,
        mtype,
        devaddr,
        fctrl,
        fcnt16,
        bytes(phy[_FHDR_END:fopts_end]),
        fport,
        frm_payload,
        bytes(phy[mic_at:]),
    )


def data_mic(aes, nwkskey, uplink, devaddr, fcnt32, msg):
    """MIC of a data frame (§4.4): first 4 bytes of CMAC(NwkSKey, B0 | msg), msg = phy[:-4]."""
    n = len(msg)
    buf = bytearray(16 + n)
    struct.pack_into(_BLOCK_FMT, buf, 0, 0x49, 0 if uplink else 1, devaddr, fcnt32, n)
    buf[16:] = msg
    return aes_cmac(aes, nwkskey, buf)[:_MIC_LEN]


def crypt_frm_payload(aes, key, uplink, devaddr, fcnt32, data):
    """Encrypt or decrypt FRMPayload (§4.3.3.1): XOR with AES(key, A_i), i = 1..ceil(len/16)."""
    n = len(data)
    if not n:
        return b""
    k = (n + 15) // 16
    blocks = bytearray(16 * k)
    direction = 0 if uplink else 1
    for i in range(k):  # all A_i in one buffer: one cipher call for the whole keystream
        struct.pack_into(_BLOCK_FMT, blocks, 16 * i, 0x01, direction, devaddr, fcnt32, i + 1)
    stream = aes(key).encrypt(blocks)
    # XOR as two integers: one C-level operation on CPython, a few allocations on a board
    x = int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")
    return x.to_bytes(n, "big")


def check_mic(aes, frame, nwkskey, fcnt32):
    """Return True if the MIC matches NwkSKey and the full 32-bit FCnt, else raise MICError."""
    check_key(nwkskey, "NwkSKey")
    _check_fcnt32(frame, fcnt32)
    msg = memoryview(frame.phy)[: len(frame.phy) - _MIC_LEN]
    if data_mic(aes, nwkskey, frame.uplink, frame.devaddr, fcnt32, msg) != frame.mic:
        raise MICError(
            "MIC mismatch for DevAddr %08x FCnt %d: wrong NwkSKey, wrong frame counter "
            "or corrupted frame" % (frame.devaddr, fcnt32)
        )
    return True


def decrypt_payload(aes, frame, key, fcnt32):
    """Decrypt the frame's FRMPayload; key is the AppSKey for FPort > 0, the NwkSKey for FPort 0."""
    check_key(key, "AppSKey" if frame.fport else "NwkSKey")
    _check_fcnt32(frame, fcnt32)
    return crypt_frm_payload(aes, key, frame.uplink, frame.devaddr, fcnt32, frame.frm_payload)


def _check_fcnt32(frame, fcnt32):
    check_int(fcnt32, 0, 0xFFFFFFFF, "fcnt32")
    if fcnt32 & 0xFFFF != frame.fcnt16:
        raise ValueError(
            "fcnt32 %d does not end in the frame's 16-bit FCnt %d" % (fcnt32, frame.fcnt16)
        )


def build_data_frame(
    aes,
    mtype,
    devaddr,
    fcnt32,
    fport,
    payload,
    nwkskey,
    appskey=None,
    fopts=b"",
    adr=False,
    adr_ack_req=False,
    ack=False,
    fpending=False,
    class_b=False,
):
    """Build a data-frame PHYPayload: encrypt the payload, sign with the MIC, return bytes.

    fport None means no FPort and no payload (an empty ACK, or MAC commands in FOpts only).
    FRMPayload is encrypted with AppSKey for FPort > 0, with NwkSKey for FPort 0 (§4.3.3).
    """
    if not isinstance(mtype, int) or not _is_data(mtype):
        raise ValueError("mtype must be a data frame type (2..5), got %r" % (mtype,))
    uplink = _is_uplink(mtype)
    check_int(devaddr, 0, 0xFFFFFFFF, "devaddr")
    check_int(fcnt32, 0, 0xFFFFFFFF, "fcnt32")
    check_key(nwkskey, "NwkSKey")
    if len(fopts) > 15:
        raise ValueError("FOpts holds at most 15 bytes, got %d" % len(fopts))
    if fport is None:
        if payload:
            raise ValueError("a payload needs an FPort")
        enc = b""
    else:
        check_int(fport, 0, 255, "fport")
        if fport == 0 and fopts:
            raise ValueError("MAC commands in FOpts cannot go with FPort 0 (§4.3.1.6)")
        if fport:
            key = appskey
            if payload:
                check_key(appskey, "AppSKey")
        else:
            key = nwkskey
        enc = crypt_frm_payload(aes, key, uplink, devaddr, fcnt32, payload)
    if uplink and fpending:
        raise ValueError("fpending is a downlink flag (FCtrl bit 4 is ClassB on uplinks)")
    if not uplink and (class_b or adr_ack_req):
        raise ValueError("class_b and adr_ack_req are uplink flags")
    fctrl = len(fopts)
    if adr:
        fctrl |= _FCTRL_ADR
    if adr_ack_req:
        fctrl |= _FCTRL_ADR_ACK_REQ
    if ack:
        fctrl |= _FCTRL_ACK
    if fpending or class_b:
        fctrl |= _FCTRL_BIT4
    port_len = 0 if fport is None else 1
    mic_at = _FHDR_END + len(fopts) + port_len + len(enc)
    if mic_at + _MIC_LEN > _MAX_PHY_LEN:
        raise ValueError("frame of %d bytes is longer than a LoRa frame (255)" % (mic_at + 4))
    buf = bytearray(mic_at + _MIC_LEN)
    buf[0] = mtype << 5
    struct.pack_into("<IBH", buf, 1, devaddr, fctrl, fcnt32 & 0xFFFF)
    pos = _FHDR_END + len(fopts)
    buf[_FHDR_END:pos] = fopts
    if port_len:
        buf[pos] = fport
        buf[pos + 1 : mic_at] = enc
    buf[mic_at:] = data_mic(aes, nwkskey, uplink, devaddr, fcnt32, memoryview(buf)[:mic_at])
    return bytes(buf)


def fcnt32_from16(last_fcnt32, fcnt16, max_gap=16384):
    """Full 32-bit FCnt of a received frame from its 16-bit FCnt and the last accepted counter.

    Returns last_fcnt32 + d when fcnt16 lies d = 0..max_gap steps ahead (mod 2^16): d = 0 is a
    retransmission of the last frame. Otherwise returns the value with those low bits just below
    last_fcnt32, which the caller rejects as a replay. last_fcnt32 = -1 means nothing received
    yet in this session (counters start at 0, §4.3.1.5). Raises FrameError when neither fits or
    when the 32-bit counter would wrap.
    """
    check_int(last_fcnt32, -1, 0xFFFFFFFF, "last_fcnt32")
    check_int(fcnt16, 0, 0xFFFF, "fcnt16")
    check_int(max_gap, 0, 0xFFFF, "max_gap")
    ahead = (fcnt16 - last_fcnt32) & 0xFFFF
    full = last_fcnt32 + ahead
    if ahead <= max_gap and full >= 0:  # full < 0 only for last -1 and FCnt 65535
        if full > 0xFFFFFFFF:
            raise FrameError("frame counter exhausted at %d: the device must rejoin" % last_fcnt32)
        return full
    behind = last_fcnt32 - (0x10000 - ahead)
    if behind < 0:
        raise FrameError(
            "FCnt %d is more than max_gap %d ahead of the last counter %d"
            % (fcnt16, max_gap, last_fcnt32)
        )
    return behind
