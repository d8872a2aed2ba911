"""The virtual MicroPython board: the real VM, its machine/time/cryptolib shims, flash and resets.

Every test boots the real MicroPython WebAssembly VM under Node.js; the hardware behind it is
simulated (sim.bus) and time is virtual (sim.clock).
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.bus import I2CNack, SimI2C, SimSPI
from sim.clock import VirtualClock
from sim.vm import (
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
    BoardHardware,
    VirtualBoard,
    harness_heap_bytes,
    run_code,
)

pytestmark = pytest.mark.vm

MakeBoard = Callable[..., VirtualBoard]


# -- small chip models written for these tests -------------------------------------------------------

class EchoSPIDevice:
    """Answers each byte with the byte it received one clock earlier (a 1-byte shift register)."""

    def __init__(self) -> None:
        self.last = 0x00
        self.transactions: list[bytes] = []
        self._current = bytearray()

    def spi_begin(self) -> None:
        self._current = bytearray()
        self.last = 0x00

    def spi_byte(self, out: int) -> int:
        previous, self.last = self.last, out
        self._current.append(out)
        return previous

    def spi_end(self) -> None:
        self.transactions.append(bytes(self._current))


class RegisterI2CDevice:
    """A register file: first written byte sets the pointer, the rest write from there on."""

    def __init__(self, who_am_i: int) -> None:
        self.regs = bytearray(256)
        self.regs[0] = who_am_i
        self.pointer = 0

    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        if not data:
            return
        self.pointer = data[0]
        for i, b in enumerate(data[1:]):
            self.regs[(self.pointer + i) & 0xFF] = b

    def i2c_read(self, n: int) -> bytes:
        out = bytes(self.regs[(self.pointer + i) & 0xFF] for i in range(n))
        self.pointer = (self.pointer + n) & 0xFF
        return out


class NackingDevice:
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        raise I2CNack

    def i2c_read(self, n: int) -> bytes:
        raise I2CNack


# -- time ------------------------------------------------------------------------------------------------

def test_pin_toggle_and_sleep_take_exact_virtual_time_and_little_real_time(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    edges: list[tuple[int, int]] = []
    hw.pin(2).watch(lambda level: edges.append((clock.now_us(), level)))
    board = make_board(clock, """
        import machine, time
        led = machine.Pin(2, machine.Pin.OUT)
        led.value(1)
        t0 = time.ticks_ms()
        time.sleep_ms(1000)
        led.value(0)
        print("slept", time.ticks_diff(time.ticks_ms(), t0), "ms")
        time.sleep(3600)
        led.on()
        print("now", time.time())
    """, hardware=hw)

    started = time.monotonic()
    board.start()
    clock.run_for(4000)
    real = time.monotonic() - started

    assert edges == [(0, 1), (1_000_000, 0), (3_601_000_000, 1)]
    assert board.console == ["slept 1000 ms", f"now {int(clock.epoch0) + 3601}"]
    assert board.history[0].outcome == "exit" and board.history[0].ended_us == 3_601_000_000
    assert board.state == "repl"
    assert real < 3.0, f"an hour of virtual sleep took {real:.2f} s of real time"


def test_lightsleep_advances_time_and_is_recorded_apart_until_a_pin_edge_wakes_it(
        make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    board = make_board(clock, """
        import machine, time
        woke = []
        machine.Pin(4, machine.Pin.IN).irq(lambda p: woke.append(1), machine.Pin.IRQ_RISING)
        t0 = time.ticks_ms()
        machine.lightsleep(500)
        time.sleep_ms(200)
        machine.lightsleep(10_000)  # the edge at 1 s ends it early
        print("up", time.ticks_diff(time.ticks_ms(), t0), "ms", len(woke))
    """, hardware=hw)
    hw.pin(4).drive(0)
    clock.call_at(1_000_000, lambda: hw.pin(4).drive(1))

    board.start()
    clock.run_for(20)

    assert board.console == ["up 1000 ms 1"]
    boot = board.history[0]
    assert boot.light_sleep_us == 500_000 + 300_000  # the 200 ms awake sleep is not counted


def test_a_busy_wait_on_ticks_sees_time_move(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import time
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < 50:
            pass
        print("waited", time.ticks_diff(time.ticks_ms(), t0))
    """)

    board.start()
    clock.run_for(1)

    assert board.history[0].outcome == "exit"
    assert 50_000 <= board.history[0].ended_us <= 52_000  # each read costs at most 1 ms
    assert board.console[0].startswith("waited 5")


# -- buses and pins ------------------------------------------------------------------------------------

def test_spi_transfers_reach_the_device_model_behind_its_chip_select(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    echo = EchoSPIDevice()
    bus = hw.spi[1] = SimSPI(1)
    bus.attach(hw.pin(5), echo)
    board = make_board(clock, """
        from machine import Pin, SPI
        cs = Pin(5, Pin.OUT, value=1)
        spi = SPI(1, baudrate=8_000_000, polarity=0, phase=0, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
        buf = bytearray(3)
        cs(0)
        spi.write_readinto(b"\\x01\\x02\\x03", buf)
        cs(1)
        print("xfer", buf.hex())
        cs(0)
        spi.write(b"\\x42")
        mv = memoryview(bytearray(4))
        spi.readinto(mv[1:3], 0xAA)
        got = spi.read(2, 0x55)
        cs(1)
        print("read", bytes(mv).hex(), got.hex())
        print("floating", spi.read(2).hex())
    """, hardware=hw)

    board.start()
    clock.run_for(1)

    assert board.crashed is None, board.crashed
    assert board.console == ["xfer 000102", "read 0042aa00 aa55", "floating ffff"]
    assert echo.transactions == [b"\x01\x02\x03", b"\x42\xaa\xaa\x55\x55"]
    assert bus.baudrate == 8_000_000


def test_i2c_register_model_and_a_missing_device_raise_enodev(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    sensor = RegisterI2CDevice(who_am_i=0x5A)
    hw.i2c[0] = SimI2C(0)
    hw.i2c[0].attach(0x44, sensor)
    hw.i2c[0].attach(0x45, NackingDevice())
    board = make_board(clock, """
        from machine import I2C, Pin
        i2c = I2C(0, scl=Pin(22), sda=Pin(21), freq=400_000)
        print("scan", [hex(a) for a in i2c.scan()])
        print("acks", i2c.writeto(0x44, b"\\x00"))
        print("who", hex(i2c.readfrom(0x44, 1)[0]))
        i2c.writeto_mem(0x44, 0x10, b"\\xab\\xcd")
        print("mem", i2c.readfrom_mem(0x44, 0x10, 2).hex())
        buf = bytearray(1)
        i2c.readfrom_mem_into(0x44, 0x11, buf)
        print("into", buf.hex())
        for addr in (0x50, 0x45):
            try:
                i2c.readfrom(addr, 2)
            except OSError as e:
                print("errno", hex(addr), e.args[0])
    """, hardware=hw)

    board.start()
    clock.run_for(1)

    assert board.crashed is None, board.crashed
    assert board.console == [
        "scan ['0x44', '0x45']",
        "acks 1",
        "who 0x5a",
        "mem abcd",
        "into cd",
        "errno 0x50 19",
        "errno 0x45 19",
    ]
    assert sensor.regs[0x10:0x12] == b"\xab\xcd"


def test_a_pin_edge_runs_the_irq_handler_at_its_virtual_instant_during_a_sleep(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    dio0 = hw.pin(26)
    board = make_board(clock, """
        import machine, time
        hits = []
        def on_dio0(pin):
            hits.append((time.ticks_ms(), pin.value()))
        dio0 = machine.Pin(26, machine.Pin.IN)
        dio0.irq(handler=on_dio0, trigger=machine.Pin.IRQ_RISING)
        time.sleep_ms(1000)
        print("hits", hits, "woke at", time.ticks_ms())
        flag = []
        dio0.irq(handler=lambda p: flag.append(1), trigger=machine.Pin.IRQ_FALLING)
        while not flag:
            machine.idle()
        print("idle until", time.ticks_ms())
    """, hardware=hw)
    clock.call_at(250_000, dio0.drive, 1)
    clock.call_at(400_000, dio0.drive, 0)  # falling: not a trigger of the first handler
    clock.call_at(600_000, dio0.drive, 1)
    clock.call_at(1_300_000, dio0.drive, 0)

    board.start()
    clock.run_for(5)

    assert board.crashed is None, board.crashed
    assert board.console == ["hits [(250, 1), (600, 1)] woke at 1000", "idle until 1300"]
    assert board.history[0].ended_us == 1_300_000


def test_adc_pwm_and_unique_id_come_from_the_board_hardware(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    pwm_calls: list[tuple[object, object, object]] = []
    hw = BoardHardware(adc={34: lambda: 1_650_000}, on_pwm=lambda *a: pwm_calls.append(a))
    board = make_board(clock, """
        import machine
        adc = machine.ADC(machine.Pin(34))
        print("adc", adc.read_uv(), adc.read_u16())
        pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=16384)
        pwm.duty_u16(32768)
        print("uid", machine.unique_id().hex(), "freq", machine.freq())
    """, hardware=hw, uid=bytes.fromhex("a1b2c3d4e5f6"))

    board.start()
    clock.run_for(1)

    assert board.crashed is None, board.crashed
    assert board.console == ["adc 1650000 32767", "uid a1b2c3d4e5f6 freq 240000000"]
    assert pwm_calls == [(25, 1000, 16384), (25, 1000, 32768)]
    assert hw.pin(25).pwm_duty_u16 == 32768


# -- flash and resets ----------------------------------------------------------------------------------------

def test_files_written_reach_flash_and_survive_deepsleep(make_board: MakeBoard, tmp_path: Path) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import machine, os
        try:
            n = int(open("count.txt").read())
        except OSError:
            n = 0
        n += 1
        print("boot", n, "cause", machine.reset_cause())
        with open("count.txt", "w") as f:
            f.write(str(n))
        if n == 1:
            os.remove("old.txt")
            os.mkdir("data")
            with open("data/log.bin", "wb") as f:
                f.write(bytes(range(8)))
        if n < 3:
            machine.deepsleep(60_000)
        print("done", sorted(os.listdir()), sorted(os.listdir("data")))
    """, files={"old.txt": "stale"})
    flash = board.flash_dir
    assert flash is not None

    board.start()
    clock.run_for(30)  # asleep after the first boot

    assert (flash / "count.txt").read_text() == "1"
    assert (flash / "data" / "log.bin").read_bytes() == bytes(range(8))
    assert not (flash / "old.txt").exists()
    assert board.state == "deepsleep"

    clock.run_for(200)

    assert board.reset_causes == [PWRON_RESET, DEEPSLEEP_RESET, DEEPSLEEP_RESET]
    assert [b.started_us for b in board.history] == [0, 60_000_000, 120_000_000]
    assert [b.outcome for b in board.history] == ["deepsleep", "deepsleep", "exit"]
    assert board.console[-1] == "done ['count.txt', 'data', 'main.py'] ['log.bin']"
    assert (flash / "count.txt").read_text() == "3"
    assert sorted(p.name for p in flash.iterdir()) == ["count.txt", "data", "main.py"]


def test_rtc_memory_and_clock_survive_deepsleep_but_not_a_power_cut(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import machine, time
        rtc = machine.RTC()
        mem = rtc.memory()
        print("mem", mem, "year", rtc.datetime()[0])
        if not mem:
            rtc.datetime((2031, 5, 6, 0, 12, 0, 0, 0))
            rtc.memory(b"fcnt=41")
            machine.deepsleep(10_000)
        print("now", time.gmtime()[:5])
    """)

    board.start()
    clock.run_for(30)
    board.power_cut()
    board.start()
    clock.run_for(1)

    lines = board.console
    assert lines[0].startswith("mem b'' year ") and lines[0] != "mem b'' year 2031"
    assert lines[1] == "mem b'fcnt=41' year 2031"
    assert lines[2] == "now (2031, 5, 6, 12, 0)"  # 10 s later, still within the minute
    assert lines[3].startswith("mem b'' year ") and lines[3] != "mem b'' year 2031"


def test_reset_and_soft_reset_reboot_with_their_causes(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import machine
        cause = machine.reset_cause()
        print("cause", cause)
        if cause == machine.PWRON_RESET:
            machine.reset()
        elif cause == machine.HARD_RESET:
            machine.soft_reset()
    """)

    board.start()
    clock.run_for(1)

    assert board.reset_causes == [PWRON_RESET, HARD_RESET, SOFT_RESET]
    assert board.console == [f"cause {PWRON_RESET}", f"cause {HARD_RESET}", f"cause {SOFT_RESET}"]


def test_an_uncaught_exception_prints_its_traceback_and_leaves_the_board_at_the_repl(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        def read_sensor():
            raise ValueError("sensor 0x44 did not answer")

        print("starting")
        read_sensor()
        print("never printed")
    """, files={"boot.py": "print('boot.py ran')\n"})

    board.start()
    clock.run_for(1)

    assert board.state == "crashed"
    assert board.crashed is not None
    assert 'File "main.py", line 5, in <module>' in board.crashed
    assert 'File "main.py", line 2, in read_sensor' in board.crashed
    assert board.crashed.rstrip().endswith("ValueError: sensor 0x44 did not answer")
    assert board.console[:3] == ["boot.py ran", "starting", "Traceback (most recent call last):"]
    assert board.console[-1] == "ValueError: sensor 0x44 did not answer"
    assert board.history[0].outcome == "crash"
    assert board.participant is not None and board.participant.finished


def test_the_watchdog_resets_a_loop_that_stops_feeding_it(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import machine, time
        cause = machine.reset_cause()
        print("cause", cause)
        if cause != machine.WDT_RESET:
            wdt = machine.WDT(timeout=2000)
            for _ in range(5):
                time.sleep_ms(500)
                wdt.feed()
            while True:  # waiting for a radio that never answers
                time.sleep_ms(100)
    """)

    board.start()
    clock.run_for(20)

    assert board.reset_causes == [PWRON_RESET, WDT_RESET]
    assert board.history[0].outcome == "wdt"
    assert board.history[1].started_us == 4_500_000  # last feed at 2.5 s + 2 s timeout
    assert board.console == [f"cause {PWRON_RESET}", f"cause {WDT_RESET}"]


def test_the_watchdog_resets_a_busy_loop_that_never_calls_the_host(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import machine
        if machine.reset_cause() != machine.WDT_RESET:
            machine.WDT(timeout=3000)
            while True:
                pass
        print("recovered")
    """, hang_timeout_s=0.5)

    board.start()
    clock.run_for(10)

    assert board.reset_causes == [PWRON_RESET, WDT_RESET]
    assert board.history[1].started_us == 3_000_000
    assert board.console == ["recovered"]


def test_a_busy_loop_without_watchdog_is_reported_hung(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, "print('spinning')\nwhile True:\n    pass\n", hang_timeout_s=0.5)

    board.start()
    clock.run_for(1)

    assert board.hung and board.state == "hung"
    assert board.history[0].outcome == "hung"
    assert board.console == ["spinning"]
    assert board.pid is None


def test_power_cut_keeps_synced_writes_and_loses_the_unsynced_one(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    hw = BoardHardware()
    board = make_board(clock, """
        import machine
        with open("a.txt", "w") as f:
            f.write("synced")
        machine.Pin(4, machine.Pin.OUT).value(1)  # a hardware call: a.txt reaches flash first
        with open("b.txt", "w") as f:
            f.write("in RAM only")
        while True:  # no hardware call: b.txt never leaves RAM
            pass
    """, hardware=hw)
    flash = board.flash_dir
    assert flash is not None

    board.start()
    runner = threading.Thread(target=clock.run_for, args=(10,))
    runner.start()
    deadline = time.monotonic() + 10
    while hw.pin(4).value() != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the VM writes b.txt into its RAM filesystem meanwhile
    pid = board.pid
    board.power_cut()
    runner.join(10)

    assert (flash / "a.txt").read_text() == "synced"
    assert not (flash / "b.txt").exists()
    assert board.history[0].outcome == "power_cut" and board.state == "off"
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # A technician reflashes main.py; power comes back; a write followed by a hardware call
    # survives the next cut.
    (flash / "d.txt").write_text("old version")
    (flash / "main.py").write_text(
        "import machine, os, time\n"
        "print('files', sorted(os.listdir()), machine.reset_cause())\n"
        "with open('c.txt', 'w') as f:\n"
        "    f.write('kept')\n"
        "d = open('d.txt', 'w')\n"
        "d.write('new version, never closed')\n"
        "time.sleep(60)\n"
    )
    board.power_on()
    clock.call_later(5_000_000, board.power_cut)
    clock.run_for(10)

    assert board.console[-1] == f"files ['a.txt', 'd.txt', 'main.py'] {PWRON_RESET}"
    assert (flash / "c.txt").read_text() == "kept"
    assert (flash / "d.txt").read_text() == "old version"  # open for writing: like LittleFS
    assert board.reset_causes == [PWRON_RESET, PWRON_RESET]
    assert board.history[1].outcome == "power_cut" and board.history[1].ended_us == clock.now_us() - 5_000_000
    assert not any(p.name.endswith(".vm-sync") for p in flash.iterdir())


def test_stop_ends_the_vm_process(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, "import time\nwhile True:\n    time.sleep(1)\n")
    board.start()
    clock.run_for(5)
    pid = board.pid
    assert pid is not None

    board.stop()

    assert board.state == "stopped" and board.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_heap_figures_show_when_a_program_outgrows_its_budget(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    heap = harness_heap_bytes() + 16 * 1024  # a board with 16 KB free for the application
    small = make_board(clock, "x = [bytearray(1000) for _ in range(8)]\n", name="small", heap_bytes=heap)
    big = make_board(clock, "x = [bytearray(1000) for _ in range(24)]\n", name="big", heap_bytes=heap)

    small.start()
    big.start()
    clock.run_for(1)

    assert small.history[0].heap_grew is False
    assert big.history[0].heap_grew is True
    big_end = big.history[0].heap_end
    assert big_end is not None and big_end.used - harness_heap_bytes() > 24_000



# The VM never collects during a run (runner.mjs explains why: the WebAssembly port defers every
# collection to the return of the outermost JS call); the runner measures the live heap instead.

def test_live_heap_leaves_out_what_gc_collect_would_free(run_in_vm: Callable[..., str]) -> None:
    out = run_in_vm("""
        import gc
        import _hw
        gc.collect()
        used0, live0 = gc.mem_alloc(), _hw.heap()["live"]
        for i in range(300):
            x = [i, i + 1]
        x = None
        gc.collect()
        print(gc.mem_alloc() - used0, _hw.heap()["live"] - live0)
    """)
    used, live = (int(v) for v in out.split())
    assert used >= 300 * 32  # the VM itself still counts every list (gc.collect() is deferred)
    assert abs(live) < 512  # the live heap does not


def test_host_calls_do_not_keep_heap_alive(run_in_vm: Callable[..., str]) -> None:
    out = run_in_vm("""
        import time
        import _hw
        from machine import Pin
        p = Pin(4, Pin.OUT)
        q = Pin(5, Pin.IN)
        time.sleep_ms(1)
        before = _hw.heap()["live"]
        for i in range(300):
            time.sleep_ms(1)
            p.value(i & 1)
            q.value()
            time.ticks_ms()
        print(_hw.heap()["live"] - before)
    """)
    assert abs(int(out)) < 512


def test_heap_peak_catches_a_temporary_allocation_freed_before_the_end(make_board: MakeBoard) -> None:
    clock = VirtualClock()
    board = make_board(clock, """
        import time
        def cycle():
            buf = bytearray(20000)  # freed when cycle() returns, long before the boot ends
            time.sleep_ms(10)
            return len(buf)
        cycle()
        time.sleep_ms(10)
        kept = [bytearray(100) for _ in range(10)]
    """)
    board.start()
    clock.run_for(1)

    rec = board.history[0]
    assert rec.outcome == "exit" and rec.heap_start is not None and rec.heap_end is not None
    assert rec.heap_start.live is not None and rec.heap_end.live is not None and rec.heap_peak is not None
    assert rec.heap_start.live < rec.heap_start.used  # what loading the harness left is not all live
    app_peak = rec.heap_app_peak
    assert app_peak is not None and 20_000 <= app_peak < 20_000 + 2048
    assert rec.heap_peak - rec.heap_end.live >= 20_000  # gone by the end, still in the peak


def test_heap_peak_restarts_on_request_and_run_code_reports_it(micropython_vm: object) -> None:
    result = run_code(textwrap.dedent("""
        import time
        import _hw
        big = bytearray(30000)
        time.sleep_ms(1)
        big = None
        h = _hw.heap(True)  # the peak restarts from the live heap now
        print(h["peak"] == h["live"], h["used"] >= h["live"])
        small = bytearray(5000)
        time.sleep_ms(1)
        h = _hw.heap()
        print(h["peak"] - h["live"])  # the 30 KB before the restart no longer counts
    """))
    assert result.traceback is None, result.output
    first, second = result.output.splitlines()
    assert first == "True True"
    assert 0 <= int(second) < 512
    assert result.heap_peak is not None and result.heap_end is not None and result.heap_end.live is not None
    assert result.heap_peak >= result.heap_end.live


# -- cryptolib -------------------------------------------------------------------------------------------------

def test_cryptolib_matches_fips197_and_sp800_38a_vectors(run_in_vm: Callable[..., str]) -> None:
    out = run_in_vm("""
        import cryptolib
        from binascii import hexlify, unhexlify as h

        # FIPS-197 appendix C.1, AES-128
        ecb = cryptolib.aes(h("000102030405060708090a0b0c0d0e0f"), 1)
        print("ecb", hexlify(ecb.encrypt(h("00112233445566778899aabbccddeeff"))).decode())
        dec = cryptolib.aes(h("000102030405060708090a0b0c0d0e0f"), cryptolib.MODE_ECB)
        print("ecb-dec", hexlify(dec.decrypt(h("69c4e0d86a7b0430d8cdb78070b4c55a"))).decode())

        # NIST SP 800-38A F.2.1 CBC-AES128.Encrypt, in one call and chained over two calls
        key = h("2b7e151628aed2a6abf7158809cf4f3c")
        iv = h("000102030405060708090a0b0c0d0e0f")
        pt = h("6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
               "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
        print("cbc", hexlify(cryptolib.aes(key, 2, iv).encrypt(pt)).decode())
        c = cryptolib.aes(key, 2, iv)
        out = bytearray(64)
        c.encrypt(pt[:32], memoryview(out)[:32])
        c.encrypt(pt[32:], memoryview(out)[32:])
        print("cbc-chained", hexlify(out).decode())
        print("cbc-dec", cryptolib.aes(key, 2, iv).decrypt(bytes(out)) == pt)

        for args in ((b"short", 1), (key, 6), (key, 2)):
            try:
                cryptolib.aes(*args)
            except ValueError as e:
                print("rejected", e)
        try:
            ecb.decrypt(bytes(16))
        except ValueError as e:
            print("one direction", e)
        try:
            ecb.encrypt(bytes(15))
        except ValueError as e:
            print("partial block", e)
    """)

    cbc = ("7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
           "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7")
    assert out.splitlines() == [
        "ecb 69c4e0d86a7b0430d8cdb78070b4c55a",
        "ecb-dec 00112233445566778899aabbccddeeff",
        f"cbc {cbc}",
        f"cbc-chained {cbc}",
        "cbc-dec True",
        "rejected key",
        "rejected mode",
        "rejected IV",
        "one direction can't encrypt & decrypt",
        "partial block blksize % 16",
    ]
