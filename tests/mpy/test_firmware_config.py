"""config.json validation and the command/fault helpers of the node, under CPython and in the VM."""

from firmware.app import command_result, fault_names
from firmware.config import Config, ConfigError
from protocol.payload import encode_command

KEY = "000102030405060708090a0b0c0d0e0f"


def good(**over):
    cfg = {"version": 1, "dev_eui": "0004a30b001c0530", "role": "soil",
           "board": "pico-rfm95", "activation": "otaa",
           "otaa": {"join_eui": "70b3d57ed0000000", "app_key": KEY},
           "interval_s": 900, "location": {"lat": 43.53, "lon": 5.45},
           "settings": {"pins": {"valve_open": 10, "valve_close": 11}}}
    cfg.update(over)
    return cfg


def fault(cfg):
    try:
        Config(cfg)
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("accepted: %r" % (cfg,))


def test_a_good_configuration_is_read_with_defaults():
    c = Config(good())
    assert c.role == "soil" and c.dev_class == "A" and c.deep_sleep
    assert c.app_key == bytes(range(16)) and c.sf == 7 and c.tx_power_dbm == 14
    assert c.settings["pins"]["valve_open"] == 10 and c.settings["lat"] == 43.53
    assert c.dev_eui_hex == "0004a30b001c0530"


def test_each_fault_names_its_key():
    assert "role = 'toaster'" in fault(good(role="toaster"))
    assert "board = 'esp8266'" in fault(good(board="esp8266"))
    assert "activation = None" in fault(good(activation=None))
    assert "interval_s = 5" in fault(good(interval_s=5))
    assert "location.lat = 91" in fault(good(location={"lat": 91, "lon": 0}))
    assert "settings.pins" in fault(good(settings={"pins": {"relay": "D5"}}))
    assert "radio.sf = 13" in fault(good(radio={"sf": 13}))
    assert "dev_eui" in fault(good(dev_eui="0004"))
    assert "version = 2" in fault(good(version=2))


def test_key_material_is_never_echoed_in_a_fault():
    bad = KEY[:-2] + "zz"
    msg = fault(good(otaa={"join_eui": "70b3d57ed0000000", "app_key": bad}))
    assert "otaa.app_key" in msg and bad not in msg
    short = KEY[:-2]
    msg = fault(good(activation="abp", abp={"dev_addr": "260b0001", "nwk_s_key": short,
                                            "app_s_key": KEY}))
    assert "abp.nwk_s_key" in msg and short not in msg


def test_commands_are_decoded_or_rejected_with_their_sequence_number():
    seq, cmd, rej = command_result(encode_command({"cmd": "set_interval", "seq": 5,
                                                   "seconds": 600}))
    assert (seq, cmd["seconds"], rej) == (5, 600, None)
    assert command_result(b"\x3f\x09") == (9, None, "unknown_command")  # unknown opcode
    assert command_result(b"\xe5\x01") == (1, None, "unknown_command")  # unknown version
    assert command_result(b"") == (0, None, "unknown_command")
    # set_interval with 30 s: below the 60 s minimum
    assert command_result(b"\x25\x0a\x00\x0f\x00") == (10, None, "out_of_range")


def test_role_faults_are_named_whether_a_list_or_an_old_bit_mask():
    assert fault_names(("sound", "bogus")) == ["sound"]
    assert fault_names(1) == ["temp_humidity"]
    assert fault_names(0) == []
