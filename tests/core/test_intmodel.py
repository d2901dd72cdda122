"""The integer model file: packing, round trip, and the validator against malformed files."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from bchw.core import intmodel, reference
from bchw.core.intmodel import IntegerLayer, IntegerModel, signed_bits
from bchw.errors import BchwError
from tests import independent


def tiny_model(n_in: int = 11, n_hidden: int = 5, n_out: int = 3, seed: int = 0) -> IntegerModel:
    rng = np.random.default_rng(seed)

    def layer(n_i, n_o, last, in_bits):
        return IntegerLayer(
            weights=rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_o, n_i)),
            scale_sign=rng.integers(-1, 2, size=(n_o, 2)).astype(np.int8),
            scale_shift=np.zeros((n_o, 2), dtype=np.int64),
            offset=rng.integers(-500, 500, size=n_o).astype(np.int64),
            requant_shift=4,
            input_bits=in_bits,
            output_bits=6 if not last else 9,
            activation="none" if last else "relu",
            output_frac_bits=3,
        )

    first = layer(n_in, n_hidden, False, 8)
    first = IntegerLayer(**{**vars(first), "scale_shift": np.where(first.scale_sign != 0, 2, 0)})
    return IntegerModel(
        input_size=n_in,
        input_bits=8,
        input_scale=1 / 255,
        layers=(first, layer(n_hidden, n_out, True, 6)),
        provenance={"note": "test"},
    )


def rewrite(data: bytes, header_edit=None, payload_edit=None, fix_trailer: bool = True) -> bytes:
    """Edit a model file's header and/or payload, re-sealing it so only the edit is wrong."""
    (n,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + n])
    payload = bytearray(data[12 + n : -32])
    if header_edit:
        header_edit(header)
    if payload_edit:
        payload_edit(payload)
    text = json.dumps(header).encode()
    body = data[:8] + struct.pack("<I", len(text)) + text + bytes(payload)
    trailer = hashlib.sha256(body).digest() if fix_trailer else data[-32:]
    return body + trailer


def test_weight_packing_order():
    weights = np.full((2, 11), -1, dtype=np.int8)
    weights[0, 0] = 1  # bit 0 of byte 0
    weights[0, 9] = 1  # bit 1 of byte 1
    weights[1, 7] = 1  # bit 7 of byte 0
    layer = IntegerLayer(
        weights=weights,
        scale_sign=np.zeros((2, 1), np.int8),
        scale_shift=np.zeros((2, 1), np.int64),
        offset=np.zeros(2, np.int64),
        requant_shift=0,
        input_bits=8,
        output_bits=8,
        activation="none",
        output_frac_bits=0,
    )
    assert layer.packed_weights().tolist() == [[0b00000001, 0b00000010], [0b10000000, 0]]


def test_round_trip_preserves_every_field(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.bchw"
    digest = intmodel.save(model, path)
    loaded = intmodel.load(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == loaded.sha256
    assert loaded.input_size == model.input_size and loaded.input_bits == model.input_bits
    assert loaded.provenance == model.provenance
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for name in ("weights", "scale_sign", "scale_shift", "offset"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        for name in ("requant_shift", "input_bits", "output_bits", "activation", "acc_bits"):
            assert getattr(a, name) == getattr(b, name), name


def test_serialisation_is_deterministic():
    assert intmodel.to_bytes(tiny_model()) == intmodel.to_bytes(tiny_model())


def test_acc_bits_cover_the_exact_range():
    layer = tiny_model().layers[0]  # 11 inputs of 8 bits: |acc| <= 2805
    assert layer.acc_bound == 11 * 255
    assert layer.acc_bits == 13 == signed_bits(-2805, 2805)
    assert signed_bits(-4096, 4095) == 13 and signed_bits(-4097, 0) == 14


def test_independent_implementation_matches_reference(short_model, digits):
    data = intmodel.to_bytes(short_model)
    scores, predicted = independent.run(data, digits.test.images)
    result = reference.run(intmodel.from_bytes(data), digits.test.images)
    assert np.array_equal(scores, result.scores)
    assert np.array_equal(predicted, result.predicted)


# --- the validator ------------------------------------------------------------------------------

GOOD = intmodel.to_bytes(tiny_model())


def first_layer(h):
    return h["layers"][0]


MALFORMED = {
    "empty file": (b"", "only 0 bytes"),
    "bad magic": (b"NOTAMODEL" + GOOD[9:], "bad magic"),
    "pickle": (b"\x80\x04\x95" + GOOD[3:], "bad magic"),
    "truncated header": (GOOD[:40], "truncated"),
    "truncated payload": (GOOD[:-40], "truncated"),
    "truncated trailer": (GOOD[:-1], "truncated"),
    "trailing bytes": (GOOD + b"\0", "unexpected bytes"),
    "absurd header length": (GOOD[:8] + struct.pack("<I", 2**31) + GOOD[12:], "header length"),
    "flipped payload bit": (
        rewrite(GOOD, payload_edit=lambda p: p.__setitem__(0, p[0] ^ 1), fix_trailer=False),
        "integrity",
    ),
    "wrong version": (rewrite(GOOD, lambda h: h.update(version=3)), "version 3"),
    "version as a float": (rewrite(GOOD, lambda h: h.update(version=1.0)), "version 1.0"),
    "float in a shape": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["offset"].update(shape=[5.0])),
        "shape",
    ),
    "bool in a shape": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["offset"].update(shape=[True])),
        "shape",
    ),
    "wrong format": (rewrite(GOOD, lambda h: h.update(format="onnx")), "format"),
    "NaN in header": (rewrite(GOOD, lambda h: h["input"].update(scale=float("nan"))), "non-finite"),
    "infinity in provenance": (
        rewrite(GOOD, lambda h: h["provenance"].update(x=float("inf"))),
        "non-finite",
    ),
    "missing field": (rewrite(GOOD, lambda h: first_layer(h).pop("requant_shift")), "missing"),
    "bool as width": (rewrite(GOOD, lambda h: first_layer(h).update(output_bits=True)), "int"),
    "string as width": (rewrite(GOOD, lambda h: first_layer(h).update(output_bits="8")), "int"),
    "absurd output bits": (rewrite(GOOD, lambda h: first_layer(h).update(output_bits=99)), "1..16"),
    "zero output bits": (rewrite(GOOD, lambda h: first_layer(h).update(output_bits=0)), "1..16"),
    "absurd input bits": (rewrite(GOOD, lambda h: h["input"].update(bits=40)), "1..16"),
    "absurd shift": (rewrite(GOOD, lambda h: first_layer(h).update(requant_shift=200)), "0..48"),
    "wrong acc bits": (rewrite(GOOD, lambda h: first_layer(h).update(acc_bits=12)), "acc_bits"),
    "wrong in_features": (
        rewrite(GOOD, lambda h: first_layer(h).update(in_features=12)),
        "in_features",
    ),
    "chain broken": (rewrite(GOOD, lambda h: h["layers"][1].update(input_bits=8)), "input_bits"),
    "classes mismatch": (rewrite(GOOD, lambda h: h.update(classes=4)), "classes"),
    "wrong weight shape": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["weights"].update(shape=[5, 1])),
        "shape",
    ),
    "wrong dtype": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["offset"].update(dtype="<i4")),
        "dtype",
    ),
    "overlapping arrays": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["scale_sign"].update(offset=0)),
        "offset",
    ),
    "extra array": (rewrite(GOOD, lambda h: first_layer(h)["arrays"].update(extra={})), "arrays"),
    "hidden layer without relu": (
        rewrite(GOOD, lambda h: first_layer(h).update(activation="none")),
        "activation",
    ),
    "signed hidden output": (
        rewrite(GOOD, lambda h: first_layer(h).update(output_signed=True)),
        "output_signed",
    ),
    "no layers": (rewrite(GOOD, lambda h: h.update(layers=[])), "no layers"),
    "unknown top-level field": (rewrite(GOOD, lambda h: h.update(comment="x")), "unknown"),
    "unknown layer field": (rewrite(GOOD, lambda h: first_layer(h).update(bias=[1])), "unknown"),
    "unknown array field": (
        rewrite(GOOD, lambda h: first_layer(h)["arrays"]["offset"].update(order="F")),
        "unknown",
    ),
    "layers not a list": (rewrite(GOOD, lambda h: h.update(layers={})), "must be an array"),
    "header not an object": (rewrite(GOOD, lambda h: None), None),
    "payload size lie": (
        rewrite(GOOD, lambda h: h.update(payload_bytes=h["payload_bytes"] + 8)),
        "truncated",
    ),
}


def _sign_byte_offset(data: bytes) -> int:
    (n,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + n])["layers"][0]["arrays"]["scale_sign"]["offset"]


def _set_payload(offset_fn, value):
    def edit(payload):
        payload[offset_fn(GOOD)] = value

    return edit


def _offset_array_start(data: bytes) -> int:
    (n,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + n])["layers"][0]["arrays"]["offset"]["offset"]


def _huge_offset(payload):
    start = _offset_array_start(GOOD)
    payload[start : start + 8] = (2**62).to_bytes(8, "little", signed=True)


MALFORMED.update(
    {
        "sign value 2": (rewrite(GOOD, payload_edit=_set_payload(_sign_byte_offset, 2)), "sign"),
        "padding bit set": (
            rewrite(GOOD, payload_edit=lambda p: p.__setitem__(1, 0xFF)),
            "padding",
        ),
        "absurd offset": (rewrite(GOOD, payload_edit=_huge_offset), "absurd"),
    }
)
del MALFORMED["header not an object"]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused_with_a_named_problem(case, tmp_path):
    data, expected = MALFORMED[case]
    path = tmp_path / "bad.bchw"
    path.write_bytes(data)
    with pytest.raises(BchwError) as info:
        intmodel.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    if expected:
        assert expected in message


def test_header_that_is_not_an_object_is_refused():
    text = b"[1, 2]"
    body = GOOD[:8] + struct.pack("<I", len(text)) + text
    with pytest.raises(BchwError, match="not a JSON object"):
        intmodel.from_bytes(body + hashlib.sha256(body).digest())


def test_duplicate_header_keys_are_refused():
    (n,) = struct.unpack("<I", GOOD[8:12])
    text = GOOD[12 : 12 + n].replace(b'"version": 1', b'"version": 1, "version": 1', 1)
    assert text != GOOD[12 : 12 + n]
    body = GOOD[:8] + struct.pack("<I", len(text)) + text + GOOD[12 + n : -32]
    with pytest.raises(BchwError, match="repeats"):
        intmodel.from_bytes(body + hashlib.sha256(body).digest())


def test_every_truncation_is_refused():
    for cut in range(0, len(GOOD), 7):
        with pytest.raises(BchwError):
            intmodel.from_bytes(GOOD[:cut])


def test_every_single_byte_corruption_is_refused_or_harmless():
    """Flip each byte of the file: the validator must refuse every one (the trailer sees it)."""
    for position in range(len(GOOD)):
        corrupt = bytearray(GOOD)
        corrupt[position] ^= 0x55
        with pytest.raises(BchwError):
            intmodel.from_bytes(bytes(corrupt))


def test_writer_refuses_a_model_the_reader_would_refuse(tmp_path):
    model = tiny_model()
    bad = IntegerModel(**{**vars(model), "input_bits": 6})  # breaks the chain into layer 0
    target = tmp_path / "out.bchw"
    with pytest.raises(BchwError):
        intmodel.save(bad, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_missing_file():
    with pytest.raises(BchwError, match="does not exist"):
        intmodel.load("/nonexistent/model.bchw")


def _with_header_text(data: bytes, edit) -> bytes:
    """The model file ``data`` with its JSON header text replaced by ``edit(text)``, its length
    field and SHA-256 trailer made consistent again."""
    import hashlib
    import struct

    from bchw.core.intmodel import HASH_BYTES, MAGIC, PREFIX_BYTES

    (header_len,) = struct.unpack_from("<I", data, len(MAGIC))
    header = data[PREFIX_BYTES : PREFIX_BYTES + header_len].decode()
    payload = data[PREFIX_BYTES + header_len : -HASH_BYTES]
    text = edit(header).encode()
    body = MAGIC + struct.pack("<I", len(text)) + text + payload
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        # A header nested 100,000 deep (RecursionError in a plain json.loads).
        (
            lambda h: h.replace(
                '"provenance": {', '"provenance": {"x": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1
            ),
            "nests too deeply",
        ),
        # Deep, but not deep enough to stop the parser: the validator must not recurse on it.
        (
            lambda h: h.replace(
                '"provenance": {', '"provenance": {"x": ' + "[" * 900 + "]" * 900 + ", ", 1
            ),
            "nests deeper than",
        ),
        # A 5,001-digit integer (ValueError past Python's digit limit, or none where lifted).
        (
            lambda h: h.replace('"provenance": {', '"provenance": {"x": ' + "9" * 5001 + ", ", 1),
            "5001 digits",
        ),
    ],
)
def test_hostile_headers_are_refused_naming_the_file(tmp_path, edit, fragment):
    from tests.commands import assert_one_line_error, cli
    from tests.conftest import DIGITS

    path = tmp_path / "hostile.bchw"
    path.write_bytes(_with_header_text(DIGITS.read_bytes(), edit))
    assert_one_line_error(cli("eval", path), str(path), fragment)
