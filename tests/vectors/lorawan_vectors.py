"""Published LoRaWAN 1.0.x and AES-CMAC test vectors, with where each comes from.

Only the data is copied (keys, frames, expected bytes), never code. Byte strings are hex in
on-air order; EUIs are given in display order, DevAddr/NetID/JoinNonce/DevNonce as ints.
Sources:
  RFC4493   RFC 4493 "The AES-CMAC Algorithm", §4 Test Vectors
  BROCAAR   github.com/brocaar/lorawan (ChirpStack's Go library):
            phypayload_test.go at a4c0dd13fa10a178336214ee6cd8cedf0e8d0613,
            phypayload_test.go at 0508bca7d832e3756c2d71514ffee45f6a29e216 (ExampleNewPHYPayload),
            mac_commands_test.go at f8d6193615eeb72b0f7509dc51ef85aa937c5ec0
  LORAPKT   github.com/anthonykirby/lora-packet (JavaScript), __tests__/*.ts
  TTN       github.com/TheThingsNetwork/lorawan-stack, pkg/crypto/*_test.go
"""

# --- AES-CMAC ------------------------------------------------------------------------------
# RFC4493 §4, Examples 1-4: K and the first 0, 16, 40 and 64 bytes of M.
CMAC_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
CMAC_MESSAGE = (
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
CMAC_TAGS = (
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
)

# --- Data frames ---------------------------------------------------------------------------
# Each: source, phy, nwkskey, appskey (key used for the FRMPayload: AppSKey, or NwkSKey on
# FPort 0), fcnt32, mtype, devaddr, fctrl, fopts, fport, plaintext FRMPayload.
DATA_FRAMES = (
    {
        # BROCAAR phypayload_test.go TestPHYPayloadMACPayloadLoRaWAN10 "FRMPayload data"
        "source": "brocaar/lorawan TestPHYPayloadMACPayloadLoRaWAN10 'FRMPayload data'",
        "phy": "400403020180010001a694642615d6c3b582",
        "nwkskey": "02020202020202020202020202020202",
        "appskey": "01010101010101010101010101010101",
        "fcnt32": 1,
        "mtype": 2,
        "devaddr": 0x01020304,
        "fctrl": 0x80,
        "fopts": "",
        "fport": 1,
        "payload": "68656c6c6f",  # "hello"
    },
    {
        # BROCAAR TestPHYPayloadMACPayloadLoRaWAN10 "Mac-commands in FOpts"
        "source": "brocaar/lorawan TestPHYPayloadMACPayloadLoRaWAN10 'Mac-commands in FOpts'",
        "phy": "4004030201030000020305016a3798f5b64dc039",
        "nwkskey": "01010101010101010101010101010101",
        "appskey": "01010101010101010101010101010101",
        "fcnt32": 0,
        "mtype": 2,
        "devaddr": 0x01020304,
        "fctrl": 0x03,
        "fopts": "020305",
        "fport": 1,
        "payload": "01020304",
    },
    {
        # BROCAAR TestPHYPayloadMACPayloadLoRaWAN10 "Mac-commands in FRMPayload" (FPort 0)
        "source": "brocaar/lorawan TestPHYPayloadMACPayloadLoRaWAN10 'Mac-commands in FRMPayload'",
        "phy": "40040302010000000069369eee6aa508",
        "nwkskey": "01010101010101010101010101010101",
        "appskey": "01010101010101010101010101010101",
        "fcnt32": 0,
        "mtype": 2,
        "devaddr": 0x01020304,
        "fctrl": 0x00,
        "fopts": "",
        "fport": 0,
        "payload": "020305",  # LinkCheckReq, LinkADRAns(channel mask + power ACK)
    },
    {
        # BROCAAR phypayload_test.go ExamplePHYPayload_lorawan10Encode / _lorawan10Decode,
        # base64 gAQDAgEDAAAGcwcK4mTU9+EX0sA=: Confirmed Data Up with DevStatusAns in FOpts
        "source": "brocaar/lorawan ExamplePHYPayload_lorawan10Encode",
        "phy": "80040302010300000673070ae264d4f7e117d2c0",
        "nwkskey": "0102030405060708090a0b0c0d0e0f10",
        "appskey": "100f0e0d0c0b0a090807060504030201",
        "fcnt32": 0,
        "mtype": 4,
        "devaddr": 0x01020304,
        "fctrl": 0x03,
        "fopts": "067307",
        "fport": 10,
        "payload": "01020304",
    },
    {
        # BROCAAR ExamplePHYPayload_lorawan11EncryptedFoptsDecode (YAQDAgEDAAAirAoB8LRo3ape0To=),
        # also LORAPKT __tests__/fopts_test.ts "should decode packet with Lorawan1.0 Encrypted
        # Fopts". A 1.1 downlink, but with ConfFCnt 0 its MIC and FRMPayload encryption are the
        # 1.0 ones (SNwkSIntKey as NwkSKey); its FOpts are 1.1-encrypted, so opaque bytes here.
        "source": "brocaar/lorawan ExamplePHYPayload_lorawan11EncryptedFoptsDecode",
        "phy": "600403020103000022ac0a01f0b468ddaa5ed13a",
        "nwkskey": "01010101010101010101010101010100",
        "appskey": "100f0e0d0c0b0a090807060504030201",
        "fcnt32": 0,
        "mtype": 3,
        "devaddr": 0x01020304,
        "fctrl": 0x03,
        "fopts": "22ac0a",
        "fport": 1,
        "payload": "01020304",
    },
    {
        # LORAPKT __tests__/parse_test.ts "should parse data payload", decrypt_test.ts "should
        # decrypt test payload", mic_test.ts "should calculate & verify correct data packet MIC"
        "source": "lora-packet parse_test/decrypt_test/mic_test 'test' payload",
        "phy": "40f17dbe4900020001954378762b11ff0d",
        "nwkskey": "44024241ed4ce9a68c6a8bc055233fd3",
        "appskey": "ec925802ae430ca77fd3dd73cb2cc588",
        "fcnt32": 2,
        "mtype": 2,
        "devaddr": 0x49BE7DF1,
        "fctrl": 0x00,
        "fopts": "",
        "fport": 1,
        "payload": "74657374",  # "test"
    },
    {
        # LORAPKT parse_test.ts "should parse data payload with empty payload", mic_test.ts
        "source": "lora-packet parse_test 'data payload with empty payload'",
        "phy": "40f17dbe49000300012a3518af",
        "nwkskey": "44024241ed4ce9a68c6a8bc055233fd3",
        "appskey": "ec925802ae430ca77fd3dd73cb2cc588",
        "fcnt32": 3,
        "mtype": 2,
        "devaddr": 0x49BE7DF1,
        "fctrl": 0x00,
        "fopts": "",
        "fport": 1,
        "payload": "",
    },
    {
        # LORAPKT parse_test.ts "should parse ack", mic_test.ts "... MIC for ACK": a downlink
        "source": "lora-packet parse_test 'should parse ack'",
        "phy": "60f17dbe4920020001f9d65d27",
        "nwkskey": "44024241ed4ce9a68c6a8bc055233fd3",
        "appskey": "ec925802ae430ca77fd3dd73cb2cc588",
        "fcnt32": 2,
        "mtype": 3,
        "devaddr": 0x49BE7DF1,
        "fctrl": 0x20,
        "fopts": "",
        "fport": 1,
        "payload": "",
    },
    {
        # LORAPKT parse_test.ts "should parse large data payload", decrypt_test.ts "should
        # decrypt large payload" (three AES blocks of keystream)
        "source": "lora-packet decrypt_test 'should decrypt large payload'",
        "phy": (
            "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376"
            "affb8aa17ad30075293f28dea8a20af3c5e7"
        ),
        "nwkskey": "44024241ed4ce9a68c6a8bc055233fd3",
        "appskey": "ec925802ae430ca77fd3dd73cb2cc588",
        "fcnt32": 4,
        "mtype": 2,
        "devaddr": 0x49BE7DF1,
        "fctrl": 0x00,
        "fopts": "",
        "fport": 1,
        "payload": (
            "54686520717569636b2062726f776e20666f78206a756d7073206f76657220746865206c617a7920"
            "646f672e"
        ),  # "The quick brown fox jumps over the lazy dog."
    },
)

# Frames to parse only (no keys published with them).
# LORAPKT __tests__/fopts_test.ts "should parse packet #1" (github issue #18): FOpts 091103.
PARSE_ONLY_FOPTS = ("4084412505a3010009110308b33750f504d4b86a", 0x05254184, 0xA3, "091103", 8)

# TTN pkg/crypto/data_messages_test.go TestUplinkDownlinkEncryption: key 01*16, DevAddr
# 01020304, FCnt 1, plaintext 01020304.
TTN_ENCRYPTION = {
    "key": "01010101010101010101010101010101",
    "devaddr": 0x01020304,
    "fcnt32": 1,
    "plain": "01020304",
    "uplink": "cff30b4e",
    "downlink": "4e75f440",
}
# TTN data_messages_test.go TestUplinkDownlinkMIC: the same bytes signed as an uplink
# (ComputeLegacyUplinkMIC) and as a downlink (ComputeLegacyDownlinkMIC), FCnt 1.
TTN_MIC = {
    "key": "01010101010101010101010101010101",
    "devaddr": 0x01020304,
    "fcnt32": 1,
    "msg": "40040302010001000101020304",
    "uplink": "3b073182",
    "downlink": "a5609fa9",
}

# BROCAAR phypayload_test.go at 0508bca7d832e3756c2d71514ffee45f6a29e216, ExampleNewPHYPayload:
# Confirmed Data Up, FCnt 0, FPort 10, payload 01020304, no FOpts.
BROCAAR_CONFIRMED_UP_2016 = {
    "phy": "80040302010000000ae264d4f7b56a0e75",
    "nwkskey": "0102030405060708090a0b0c0d0e0f10",
    "appskey": "100f0e0d0c0b0a090807060504030201",
}

# --- Join-request --------------------------------------------------------------------------
JOIN_REQUESTS = (
    {
        # BROCAAR TestPHYPayloadJoinRequest: AAQDAgEEAwIBBQQDAgUEAwItEGqZDhI=
        "source": "brocaar/lorawan TestPHYPayloadJoinRequest",
        "phy": "00040302010403020105040302050403022d106a990e12",
        "appkey": "01010101010101010101010101010101",
        "join_eui": "0102030401020304",
        "dev_eui": "0203040502030405",
        "dev_nonce": 4141,
    },
    {
        # BROCAAR ExamplePHYPayload_joinRequest: AAEBAQEBAQEBAgICAgICAgIDAwm5ezI=
        "source": "brocaar/lorawan ExamplePHYPayload_joinRequest",
        "phy": "0001010101010101010202020202020202030309b97b32",
        "appkey": "0102030405060708090a0b0c0d0e0f10",
        "join_eui": "0101010101010101",
        "dev_eui": "0202020202020202",
        "dev_nonce": 771,
    },
    {
        # LORAPKT __tests__/mic_test.ts "should calculate & verify correct join request packet MIC"
        "source": "lora-packet mic_test 'join request packet MIC'",
        "phy": "0039363463336913aa05693574323831330489c65b1304",
        "appkey": "98929b92c49edba9676d646d3b612456",
        "join_eui": "aa13693363343639",
        "dev_eui": "3331383274356905",
        "dev_nonce": 0x8904,
    },
    {
        # LORAPKT __tests__/parse_test.ts "should parse join request payload" (DevNonce f18e,
        # the one key_gen_test.ts derives its session keys from)
        "source": "lora-packet parse_test 'should parse join request payload'",
        "phy": "0039363463336913aa05693574323831338ef1c1d5ec6c",
        "appkey": "98929b92c49edba9676d646d3b612456",
        "join_eui": "aa13693363343639",
        "dev_eui": "3331383274356905",
        "dev_nonce": 0xF18E,
    },
    {
        # TTN pkg/crypto/join_messages_test.go TestComputeJoinRequestMIC
        "source": "lorawan-stack TestComputeJoinRequestMIC",
        "phy": "00080706050403020108070605040302010201e6e10c55",
        "appkey": "01010101010101010101010101010101",
        "join_eui": "0102030405060708",
        "dev_eui": "0102030405060708",
        "dev_nonce": 0x0102,
    },
)

# --- Join-accept ---------------------------------------------------------------------------
# Each: the encrypted PHYPayload as sent, the AppKey, the fields; `plain` when published.
JOIN_ACCEPTS = (
    {
        # BROCAAR TestPHYPayloadJoinAccept: JoinNonce 5704647, NetID 221101, DevAddr 02031980,
        # MIC [67 72 91 188]
        "source": "brocaar/lorawan TestPHYPayloadJoinAccept",
        "phy": "20493eeb51fba2116f810edb3742975142",
        "appkey": "00112233445566778899aabbccddeeff",
        "join_nonce": 5704647,
        "net_id": 0x221101,
        "devaddr": 0x02031980,
        "rx1_dr_offset": 0,
        "rx2_dr": 0,
        "rx_delay": 0,
        "mic": "43485bbc",
        "plain": None,
    },
    {
        # BROCAAR ExamplePHYPayload_joinAcceptSend: ICPPM1SJquMYPAvguqje5fM=
        "source": "brocaar/lorawan ExamplePHYPayload_joinAcceptSend",
        "phy": "2023cf335489aae3183c0be0baa8dee5f3",
        "appkey": "0102030405060708090a0b0c0d0e0f10",
        "join_nonce": 65793,
        "net_id": 0x020202,
        "devaddr": 0x01020304,
        "rx1_dr_offset": 0,
        "rx2_dr": 0,
        "rx_delay": 0,
        "mic": None,
        "plain": None,
    },
    {
        # LORAPKT __tests__/join_accept_encrypt.ts "should create join accept packet with zero
        # value": all-zero AppKey and fields, MIC f86f0a91
        "source": "lora-packet join_accept_encrypt 'join accept packet with zero value'",
        "phy": "20e3de108795f776b8037610ef7869b5b3",
        "appkey": "00000000000000000000000000000000",
        "join_nonce": 0,
        "net_id": 0,
        "devaddr": 0,
        "rx1_dr_offset": 0,
        "rx2_dr": 0,
        "rx_delay": 0,
        "mic": "f86f0a91",
        "plain": "20000000000000000000000000f86f0a91",
    },
    {
        # TTN pkg/crypto/join_messages_test.go TestJoinAcceptEncryption and
        # TestComputeLegacyJoinAcceptMIC (MIC 32f54ab3)
        "source": "lorawan-stack TestJoinAcceptEncryption / TestComputeLegacyJoinAcceptMIC",
        "phy": "20c9fbb259e11649096a568a9e3b7117c3",
        "appkey": "01010101010101010101010101010101",
        "join_nonce": 0x010203,
        "net_id": 0x010203,
        "devaddr": 0x01020304,
        "rx1_dr_offset": 0,
        "rx2_dr": 0,
        "rx_delay": 1,
        "mic": "32f54ab3",
        "plain": "2003020103020104030201000132f54ab3",
    },
)

# LORAPKT __tests__/parse_test.ts / mic_test.ts "join accept packet MIC": published decrypted
# (the encrypted form is not given), AppKey 98929b92..., MIC d9d0a6e7.
PLAIN_JOIN_ACCEPT = {
    "plain": "20386337ccbbaae7cd2c010000d9d0a6e7",
    "appkey": "98929b92c49edba9676d646d3b612456",
    "join_nonce": 0x376338,
    "net_id": 0xAABBCC,
    "devaddr": 0x012CCDE7,
}

# LORAPKT __tests__/parse_test.ts "should Join Accept": MHDR 0x33 has Major 3, which a
# LoRaWAN R1 parser must refuse.
BAD_MAJOR_FRAME = "33105eafd15e04a62872c97f821955a1b75420f0ffcc20cf999347e18aa8a235"

# --- Session keys (LoRaWAN 1.0.x, NwkSKey/AppSKey from AppKey) -------------------------------
SESSION_KEYS = (
    {
        # LORAPKT __tests__/key_gen_test.ts "should generate valid session keys"
        "source": "lora-packet key_gen_test",
        "appkey": "98929b92c49edba9676d646d3b612456",
        "join_nonce": 0x376338,
        "net_id": 0xAABBCC,
        "dev_nonce": 0xF18E,
        "nwkskey": "4e3d6e6afbcc67af2ba3c8e8ec4acf4b",
        "appskey": "610897aa6f1460623443b527d3ac6a9d",
    },
    {
        # TTN pkg/crypto/key_derivation_test.go TestKeyDerivation, DeriveLegacyNwkSKey /
        # DeriveLegacyAppSKey
        "source": "lorawan-stack TestKeyDerivation (legacy keys)",
        "appkey": "bec499c69e9c939e413b663961636c61",
        "join_nonce": 0xAE3B1C,
        "net_id": 0x020101,
        "dev_nonce": 0x7369,
        "nwkskey": "0db924ee6af90698e05fc7ce48303c01",
        "appskey": "8c1e0543a229088de6f84e74bb46bd62",
    },
)

# --- MAC commands --------------------------------------------------------------------------
# BROCAAR mac_commands_test.go at f8d61936: (cid, uplink, fields, payload bytes after the CID)
MAC_COMMANDS = (
    # TestMACCommand: LinkCheckAns Margin=10 GwCnt=15 -> []byte{2, 10, 15}
    (0x02, False, {"margin": 10, "gw_cnt": 15}, "0a0f"),
    # TestLinkCheckAnsPayload -> {123, 234}
    (0x02, False, {"margin": 123, "gw_cnt": 234}, "7bea"),
    # TestLinkADRReqPayload: DataRate=1 TXPower=2 ChMask(channel 3) ChMaskCntl=4 NbRep=5
    (
        0x03,
        False,
        {"data_rate": 1, "tx_power": 2, "ch_mask": 0x0004, "ch_mask_cntl": 4, "nb_trans": 5},
        "12040045",
    ),
    # TestChMask: channels 1, 2 and 13 -> {3, 16}; TestRedundancy ChMaskCntl=1 NbRep=5 -> {21}
    (
        0x03,
        False,
        {"data_rate": 0, "tx_power": 0, "ch_mask": 0x1003, "ch_mask_cntl": 1, "nb_trans": 5},
        "00031015",
    ),
    # TestLinkADRAnsPayload table
    (0x03, True, {"power_ack": False, "data_rate_ack": False, "channel_mask_ack": True}, "01"),
    (0x03, True, {"power_ack": False, "data_rate_ack": True, "channel_mask_ack": False}, "02"),
    (0x03, True, {"power_ack": True, "data_rate_ack": False, "channel_mask_ack": False}, "04"),
    (0x03, True, {"power_ack": True, "data_rate_ack": True, "channel_mask_ack": True}, "07"),
    # TestDutyCycleReqPayload: MaxDCycle=13
    (0x04, False, {"max_duty_cycle": 13}, "0d"),
    # TestRXParamSetupReqPayload: Frequency 26265700, RX2DataRate 11, RX1DROffset 3
    (0x05, False, {"rx1_dr_offset": 3, "rx2_data_rate": 11, "frequency": 26265700}, "3b010204"),
    # TestRXParamSetupAnsPayload table
    (
        0x05,
        True,
        {"rx1_dr_offset_ack": False, "rx2_data_rate_ack": False, "channel_ack": True},
        "01",
    ),
    (
        0x05,
        True,
        {"rx1_dr_offset_ack": False, "rx2_data_rate_ack": True, "channel_ack": False},
        "02",
    ),
    (
        0x05,
        True,
        {"rx1_dr_offset_ack": True, "rx2_data_rate_ack": False, "channel_ack": False},
        "04",
    ),
    (0x05, True, {"rx1_dr_offset_ack": True, "rx2_data_rate_ack": True, "channel_ack": True}, "07"),
    # TestDevStatusAnsPayload table (6-bit signed margin)
    (0x06, True, {"battery": 0, "margin": -30}, "0022"),
    (0x06, True, {"battery": 255, "margin": 30}, "ff1e"),
    (0x06, True, {"battery": 127, "margin": -1}, "7f3f"),
    (0x06, True, {"battery": 127, "margin": 0}, "7f00"),
    # TestNewChannelReqPayload: ChIndex 3, Freq 26265700, MaxDR 5, MinDR 10
    (0x07, False, {"ch_index": 3, "frequency": 26265700, "max_dr": 5, "min_dr": 10}, "030102045a"),
    # TestNewChannelAnsPayload table
    (0x07, True, {"data_rate_range_ok": False, "channel_frequency_ok": False}, "00"),
    (0x07, True, {"data_rate_range_ok": False, "channel_frequency_ok": True}, "01"),
    (0x07, True, {"data_rate_range_ok": True, "channel_frequency_ok": False}, "02"),
    (0x07, True, {"data_rate_range_ok": True, "channel_frequency_ok": True}, "03"),
    # TestRXTimingSetupReqPayload: Delay 15
    (0x08, False, {"delay": 15}, "0f"),
    # TestDLChannelReqPayload table
    (0x0A, False, {"ch_index": 0, "frequency": 868100000}, "00287684"),
    (0x0A, False, {"ch_index": 1, "frequency": 868200000}, "01107a84"),
    # TestDLChannelAnsPayload table
    (0x0A, True, {"uplink_frequency_exists": False, "channel_frequency_ok": False}, "00"),
    (0x0A, True, {"uplink_frequency_exists": False, "channel_frequency_ok": True}, "01"),
    (0x0A, True, {"uplink_frequency_exists": True, "channel_frequency_ok": False}, "02"),
    (0x0A, True, {"uplink_frequency_exists": True, "channel_frequency_ok": True}, "03"),
    # TestMACPayloads "Testing DeviceTimeAnsPayload": 1 s, and 1 s + 2/256 s
    (0x0D, False, {"seconds": 1, "fraction": 0}, "0100000000"),
    (0x0D, False, {"seconds": 1, "fraction": 2}, "0100000002"),
)
# BROCAAR mac_commands_test.go TestMACCommand: {2, 10, 15} is LinkCheckAns on a downlink. On an
# uplink 0x02 is LinkCheckReq, without payload; brocaar then fails on 0x0a, but LoRaWAN 1.0.4
# defines 0x0a uplink as DlChannelAns, so here the bytes read as two uplink commands.
LINK_CHECK_BYTES = "020a0f"
# BROCAAR mac_commands_test.go TestDLChannelReqPayload: 868100099 Hz is not a multiple of 100.
BAD_DL_CHANNEL_FREQ = 868100099
