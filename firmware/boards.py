"""Board pin maps: which GPIO each board wires to its SX1276 and to the sensor I2C bus.

Numbers are the boards' documented wiring (vendor pinout diagrams and schematics):
Heltec WiFi LoRa 32 V2, LILYGO TTGO LoRa32 V2.1 (T3 v1.6.1), Adafruit Feather RP2040 RFM95
and a Raspberry Pi Pico wired to an RFM95 breakout the way our installers wire it.

Checked against: Heltec's WiFi LoRa 32 (V2) pinout (SX1276 NSS 18, RST 14, DIO0 26 on SCK 5 /
MOSI 27 / MISO 19; OLED I2C SDA 4 / SCL 15; VBAT on GPIO37 through 220k/100k), LILYGO's T3 v1.6.1
pinout (RST 23, I2C SDA 21 / SCL 22, VBAT on GPIO35 through 100k/100k), Adafruit's Feather RP2040
RFM board definition (SPI1 SCK 14 / MOSI 15 / MISO 8, RFM CS 16, RST 17, DIO0 21, STEMMA QT on
I2C1 SDA 2 / SCL 3; no battery divider on an ADC pin) and the Pico datasheet (VSYS/3 on GPIO29).
"""

# name: (spi_id, sck, mosi, miso, cs, reset, dio0, i2c_id, sda, scl, battery_adc, battery_divider)
BOARDS = {
    "heltec-lora32-v2": (1, 5, 27, 19, 18, 14, 26, 0, 4, 15, 37, 3.2),
    "ttgo-lora32-v21": (1, 5, 27, 19, 18, 23, 26, 0, 21, 22, 35, 2.0),
    "feather-rp2040-rfm95": (1, 14, 15, 8, 16, 17, 21, 1, 2, 3, None, 0),
    "pico-rfm95": (0, 18, 19, 16, 17, 20, 21, 0, 4, 5, 29, 3.0),
}


def pin_map(name):
    """The wiring tuple of a board, or ValueError naming the boards we know."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError("unknown board %r: expected one of %s" % (name, ", ".join(sorted(BOARDS))))


class Hardware:
    """The buses and pins of one board, built from its pin map with the `machine` module given."""

    def __init__(self, machine, board):
        spi_id, sck, mosi, miso, cs, reset, dio0, i2c_id, sda, scl, adc, div = pin_map(board)
        Pin = machine.Pin
        self.machine = machine  # roles build their own pins, PWM and IRQs from it
        self.board = board
        self.spi = machine.SPI(spi_id, baudrate=5_000_000, polarity=0, phase=0,
                               sck=Pin(sck), mosi=Pin(mosi), miso=Pin(miso))
        self.cs = Pin(cs, Pin.OUT, value=1)
        self.reset = Pin(reset, Pin.OUT, value=1)
        self.dio0 = Pin(dio0, Pin.IN)
        self.i2c = machine.I2C(i2c_id, sda=Pin(sda), scl=Pin(scl), freq=100_000)
        self._adc = machine.ADC(Pin(adc)) if adc is not None else None
        self._div = div

    def battery_mv(self):
        """Battery or supply voltage in mV through the board's divider; 0 when not wired."""
        if self._adc is None:
            return 0
        return int(self._adc.read_uv() * self._div) // 1000
