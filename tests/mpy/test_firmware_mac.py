"""The node's MAC command handling (firmware/mac.py), under CPython and in the VM."""

from firmware.mac import MacContext, MacSettings, battery_level, fit_fopts, process
from protocol.lorawan import (
    CID_DEV_STATUS,
    CID_DUTY_CYCLE,
    CID_LINK_ADR,
    CID_LINK_CHECK,
    CID_NEW_CHANNEL,
    CID_RX_PARAM_SETUP,
    CID_RX_TIMING_SETUP,
    encode_mac_command,
    parse_mac_commands,
)


def down(cid, **f):
    return encode_mac_command(cid, False, **f)


def answers(data):
    return parse_mac_commands(data, True)


def adr(dr=3, power=2, mask=0x0007, cntl=0, nb=2):
    return down(CID_LINK_ADR, data_rate=dr, tx_power=power, ch_mask=mask, ch_mask_cntl=cntl,
                nb_trans=nb)


def test_link_adr_req_sets_data_rate_power_mask_and_nb_trans():
    s = MacSettings()
    ans, sticky, changed = process(s, adr(dr=3, power=2, mask=0x0003, nb=2), MacContext())
    assert answers(ans) == [(CID_LINK_ADR, {"power_ack": True, "data_rate_ack": True,
                                            "channel_mask_ack": True})]
    assert sticky == b"" and changed
    assert (s.dr, s.tx_power, s.ch_mask, s.nb_trans) == (3, 2, 0x0003, 2)
    assert s.enabled() == [868100000, 868300000]
    assert s.tx_power_dbm(14) == 12  # 16 dBm - 2 * 2


def test_link_adr_req_enabling_an_undefined_channel_changes_nothing():
    s = MacSettings()
    ans, _, changed = process(s, adr(dr=0, power=1, mask=0x0010), MacContext())
    (_cid, f), = answers(ans)
    assert f == {"power_ack": True, "data_rate_ack": True, "channel_mask_ack": False}
    assert not changed and (s.dr, s.ch_mask) == (5, 0x0007)


def test_link_adr_req_with_unsupported_rate_or_power_is_refused_whole():
    s = MacSettings()
    ans, _, changed = process(s, adr(dr=6, power=9), MacContext())
    (_cid, f), = answers(ans)
    assert f == {"power_ack": False, "data_rate_ack": False, "channel_mask_ack": True}
    assert not changed and (s.dr, s.tx_power, s.nb_trans) == (5, 1, 1)


def test_a_block_of_link_adr_reqs_is_answered_once_per_command_and_applied_together():
    s = MacSettings()
    s.add_cflist([867100000, 867300000, 0, 0, 0])
    block = adr(dr=15, power=15, mask=0x0018, nb=0) + adr(dr=4, power=3, mask=0x0018, nb=1)
    ans, _, changed = process(s, block, MacContext())
    got = answers(ans)
    assert len(got) == 2 and all(f["channel_mask_ack"] for _, f in got)
    assert changed and s.enabled() == [867100000, 867300000] and s.dr == 4


def test_rx_param_setup_is_applied_and_its_answer_sticks_until_a_downlink():
    s = MacSettings()
    req = down(CID_RX_PARAM_SETUP, rx1_dr_offset=2, rx2_data_rate=3, frequency=869525000)
    ans, sticky, changed = process(s, req, MacContext())
    assert ans == b"" and changed
    assert answers(sticky) == [(CID_RX_PARAM_SETUP, {"rx1_dr_offset_ack": True,
                                                     "rx2_data_rate_ack": True,
                                                     "channel_ack": True})]
    assert (s.rx1_dr_offset, s.rx2_dr, s.rx2_freq) == (2, 3, 869525000)


def test_rx_param_setup_with_a_frequency_outside_eu868_is_refused():
    s = MacSettings()
    req = down(CID_RX_PARAM_SETUP, rx1_dr_offset=1, rx2_data_rate=3, frequency=915000000)
    _, sticky, changed = process(s, req, MacContext())
    (_cid, f), = answers(sticky)
    assert f["channel_ack"] is False and f["rx1_dr_offset_ack"] is True
    assert not changed and s.rx2_freq == 869525000 and s.rx1_dr_offset == 0


def test_dev_status_reports_battery_and_the_downlink_snr_as_margin():
    ans, _, _ = process(MacSettings(), down(CID_DEV_STATUS), MacContext(battery=200, snr=-7.25))
    assert answers(ans) == [(CID_DEV_STATUS, {"battery": 200, "margin": -7})]


def test_battery_level_uses_the_lorawan_scale():
    assert battery_level(3300, mains=True) == 0
    assert battery_level(0, mains=False) == 255
    assert battery_level(1500, mains=False) == 1
    assert battery_level(3300, mains=False) == 254
    assert 1 < battery_level(2600, mains=False) < 254


def test_duty_cycle_and_rx_timing_requests():
    s = MacSettings()
    data = down(CID_DUTY_CYCLE, max_duty_cycle=4) + down(CID_RX_TIMING_SETUP, delay=0)
    ans, sticky, changed = process(s, data, MacContext())
    assert answers(ans) == [(CID_DUTY_CYCLE, {})]
    assert answers(sticky) == [(CID_RX_TIMING_SETUP, {})]
    assert changed and s.max_dcycle == 4 and s.rx1_delay_s == 1  # Del 0 means 1 s


def test_link_check_answer_is_recorded():
    ctx = MacContext()
    ans, _, changed = process(MacSettings(), down(CID_LINK_CHECK, margin=12, gw_cnt=2), ctx)
    assert ans == b"" and not changed and ctx.link_check == (12, 2)


def test_new_channel_req_cannot_touch_the_default_channels():
    s = MacSettings()
    ans, _, changed = process(s, down(CID_NEW_CHANNEL, ch_index=1, frequency=867100000,
                                      max_dr=5, min_dr=0), MacContext())
    (_cid, f), = answers(ans)
    assert f["channel_frequency_ok"] is False and not changed
    ans, _, changed = process(s, down(CID_NEW_CHANNEL, ch_index=3, frequency=867100000,
                                      max_dr=5, min_dr=0), MacContext())
    assert changed and 867100000 in s.enabled()


def test_commands_after_an_unknown_cid_are_dropped_but_earlier_ones_answered():
    s = MacSettings()
    data = down(CID_DUTY_CYCLE, max_duty_cycle=1) + b"\x7f\x01\x02" + down(CID_DEV_STATUS)
    ans, _, _ = process(s, data, MacContext())
    assert answers(ans) == [(CID_DUTY_CYCLE, {})]
    assert s.max_dcycle == 1


def test_truncated_mac_commands_never_raise():
    s = MacSettings()
    ans, sticky, changed = process(s, adr()[:3], MacContext())
    assert (ans, sticky, changed) == (b"", b"", False)


def test_settings_round_trip_through_the_persisted_dict():
    s = MacSettings()
    process(s, adr(dr=2, power=4, mask=0x0005, nb=3), MacContext())
    t = MacSettings(5, d=s.to_dict())
    assert (t.dr, t.tx_power, t.ch_mask, t.nb_trans) == (2, 4, 0x0005, 3)


def test_answers_longer_than_fopts_are_split_at_command_boundaries():
    many = encode_mac_command(CID_DEV_STATUS, True, battery=1, margin=0) * 6  # 18 bytes
    first, rest = fit_fopts(many)
    assert len(first) == 15 and len(rest) == 3
    assert len(answers(first)) == 5 and len(answers(rest)) == 1


def test_adr_backoff_asks_for_an_answer_then_regains_range_step_by_step():
    from firmware.mac import adr_backoff

    s = MacSettings(dr=2, tx_power=5)
    s.ch_mask = 0x0001
    assert adr_backoff(s, 63) == (False, False)
    assert adr_backoff(s, 64) == (True, False)  # ADR_ACK_LIMIT: ADRACKReq
    assert adr_backoff(s, 95) == (True, False)
    assert adr_backoff(s, 96) == (True, True) and s.tx_power == 1  # + ADR_ACK_DELAY: power
    assert adr_backoff(s, 128) == (True, True) and s.dr == 1  # then one DR lower each delay
    assert adr_backoff(s, 160) == (True, True) and s.dr == 0
    assert adr_backoff(s, 192) == (False, True) and s.ch_mask & 7 == 7  # default channels back
    assert adr_backoff(s, 200) == (False, False)  # at the floor: nothing more to ask
