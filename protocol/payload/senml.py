"""SenML (RFC 8428) records of a decoded reading set, with registered units only.

Record names are the reading keys of fields.py (flags: one boolean record per name, prefixed);
units and conversions come from the same table. Primary units are used throughout, never the
RFC 8798 secondary units ("SHOULD NOT" in SenML packs): µg/m³ -> kg/m3, mV -> V, Wh -> J,
litres -> m3, % -> "/" (ratio 0..1). Sound levels use "dB": the registry has no A-weighted
unit (and "Bspl" is NOT RECOMMENDED and in bels), so A-weighting and the statistic are in the
name (laeq, lamax, la90...).
"""

from protocol.payload.codec import quantize
from protocol.payload.fields import (
    BOOL,
    ENUM,
    F_KEY,
    F_KIND,
    F_NAMES,
    F_SCALE,
    F_SENML,
    FLAGS,
    NUM,
    SEMVER,
)
from protocol.payload.uplink import encode_uplink, layout_of


def _value(f, value, what):
    _, mul, div = f[F_SENML]
    num = quantize(f, value, what) * mul
    den = f[F_SCALE] * div
    return num // den if num % den == 0 else num / den


def to_senml(role, readings, base_name, base_time=None):
    """SenML records (JSON labels bn, bt, n, u, v, vs, vb) for one reading set of `role`."""
    encode_uplink(role, readings)  # the same checks as on the air: bad readings raise here
    fport, layout = layout_of(role)
    what = f"FPort {fport} ({role})"
    records = []
    for f in layout:
        key = f[F_KEY]
        value = readings.get(key)
        if value is None:
            continue
        kind = f[F_KIND]
        if kind == NUM:
            rec = {"n": key, "v": _value(f, value, what)}
            if f[F_SENML][0]:
                rec["u"] = f[F_SENML][0]
            records.append(rec)
        elif kind == ENUM or kind == SEMVER:
            records.append({"n": key, "vs": value})
        elif kind == BOOL:
            records.append({"n": key, "vb": value})
        elif kind == FLAGS:
            for name in f[F_NAMES]:
                records.append({"n": f[F_SENML] + name, "vb": name in value})
    if records:
        first = {"bn": base_name}
        if base_time is not None:
            first["bt"] = base_time
        first.update(records[0])
        records[0] = first
    return records
