"""Bad input, command by command: every case ends in exit 2 with the file or field named and no
traceback (issue 11's campaign, as our own tests).  Byte flips and truncations of every reader
are drawn by hypothesis; a reader may accept a damaged file that is still a valid one (exit 0),
but never crash, hang or allocate without bound.

Running as root (as CI containers do), permissions do not deny reads or writes; those cases
patch ``open`` / ``os.access`` for the one path, as a read-only or unreadable file would
behave for an ordinary user.
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import struct

import h5py
import nir
import numpy as np
import pytest
import torch
from conftest import random_events, real_path, write_aedat4, write_dvsgesture_npy, write_nmnist_bin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeline.cli import main
from spikeline.deploy.export import export_model, write_manifest
from spikeline.pipeline.models import build_model

CNN_SPEC = {"name": "cnn", "in_channels": 2, "num_classes": 10, "input_size": [34, 34],
            "encoding": "binary"}
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def run(argv, capsys) -> tuple[int, str]:
    """``spikeline ARGV`` in this process: (exit code, stderr).  Any exception other than the
    CLI's own exit is a traceback, and fails the test."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse refusing an option value
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def refused(argv, capsys, *named) -> str:
    """Assert exit 2 with every string of ``named`` in the message; returns the message."""
    code, err = run(argv, capsys)
    assert code == 2, err
    for text in named:
        assert str(text) in err, (text, err)
    return err


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("export")
    export_model(build_model("cnn"), CNN_SPEC, out, config={"T": 4})
    return out


@pytest.fixture
def export_copy(export_dir, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    return target


@pytest.fixture
def x_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((4, 1, 2, 34, 34)) < 0.2).astype(np.float32))
    return path


def deny(monkeypatch, path, err=errno.EACCES):
    """``open(path)`` raises as for a file the user may not read."""
    real_open, target = builtins.open, os.fspath(path)

    def fake_open(file, *args, **kwargs):
        if os.fspath(file) == target if isinstance(file, (str, os.PathLike)) else False:
            raise OSError(err, os.strerror(err), target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


# ---- 1. AEDAT4: no Rust panic reaches the process ------------------------------------------

def test_the_flipped_byte_that_made_aedat_panic(tmp_path, capsys, monkeypatch):
    data = bytearray(real_path("davis346_street.aedat4").read_bytes())
    data[2728] ^= 0x80  # inside the XML description: aedat panics on a char boundary
    path = tmp_path / "flip.aedat4"
    path.write_bytes(data)
    refused(["events", path], capsys, path, "description")
    # and should the structure check miss one, the panic itself becomes a BadInput
    monkeypatch.setattr("spikeline.datasets.events.check_aedat4", lambda p: {0: "EVTS"})
    refused(["events", path], capsys, path, "PanicException")


def test_aedat4_header_length_zero(tmp_path, capsys):
    data = bytearray(real_path("davis346_street.aedat4").read_bytes()[:20_000])
    data[14:18] = struct.pack("<I", 0)
    (tmp_path / "h.aedat4").write_bytes(data)
    refused(["events", tmp_path / "h.aedat4"], capsys, "h.aedat4", "header length 0")


@FUZZ
@given(position=st.integers(14, 40_000), bit=st.integers(0, 7))
def test_aedat4_byte_flips(tmp_path, capsys, position, bit):
    data = bytearray(real_path("davis346_street.aedat4").read_bytes())
    data[position] ^= 1 << bit
    path = tmp_path / "f.aedat4"
    path.write_bytes(data)
    code, err = run(["events", path], capsys)
    assert code in (0, 2) and (code == 0 or str(path) in err)


def test_aedat4_corrupt_timestamp(tmp_path, capsys):
    t, x, y, p = random_events(50, 64, 64, seed=1)
    t[25] = 6 * 10**16  # one flipped high bit: 1900 years
    path = write_aedat4(tmp_path / "t.aedat4", t, x, y, p, 64, 64)
    refused(["events", path], capsys, path, "corrupt timestamp")


# ---- truncations and flips of every event reader --------------------------------------------

def _event_files(tmp_path):
    t, x, y, p = random_events(300, 34, 34, seed=2)
    return {
        "aedat4": write_aedat4(tmp_path / "a.aedat4", t, x, y, p, 34, 34),
        "bin": write_nmnist_bin(tmp_path / "n.bin", t, x, y, p),
        "npy": write_dvsgesture_npy(tmp_path / "g.npy", t // 1000, x, y, p),
        "raw": real_path("prophesee_evt2.raw"),
    }


@FUZZ
@given(kind=st.sampled_from(["aedat4", "bin", "npy", "raw"]), cut=st.floats(0, 1),
       flip=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.integers(0, 7))))
def test_event_readers_truncated_or_flipped(tmp_path, capsys, kind, cut, flip):
    source = _event_files(tmp_path)[kind]
    data = bytearray(source.read_bytes()[:max(1, int(len(source.read_bytes()) * cut))]
                     if kind != "raw" else source.read_bytes()[:max(1, int(300_000 * cut))])
    if flip is not None:
        where, bit = flip
        data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    path = tmp_path / f"damaged.{kind}"
    path.write_bytes(data)
    code, err = run(["events", path], capsys)
    assert code in (0, 2) and (code == 0 or str(path) in err)


@pytest.mark.parametrize("name", ["davis346_street.aedat4", "nmnist_sample.bin",
                                  "prophesee_evt2.raw"])
def test_unreadable_event_files(tmp_path, capsys, monkeypatch, name, export_dir):
    path = tmp_path / name
    shutil.copyfile(real_path(name), path)
    path.chmod(0)
    deny(monkeypatch, path)  # root ignores the mode
    refused(["events", path], capsys, path, "Permission denied")
    refused(["simulate", export_dir, "--events", path], capsys, path, "Permission denied")


# ---- 2. sizes claimed by small files are checked before allocating --------------------------

def _write_graph(path, nodes, edges, metadata=None):
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {},
                                 type_check=False))
    return path


def _delay_graph(path, delay, n=4, metadata=None):
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}),
             "delay": nir.Delay(delay=np.full(n, delay)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    return _write_graph(path, nodes, [("input", "delay"), ("delay", "output")], metadata)


def _input(tmp_path, shape, T=3):
    path = tmp_path / "in.npy"
    np.save(path, np.ones((T, *shape), np.float32))
    return path


def test_nir_delay_of_1e12_seconds(tmp_path, capsys):
    graph = _delay_graph(tmp_path / "d.nir", 1e12)
    refused(["simulate", graph, "--input", _input(tmp_path, (4,))], capsys,
            "d.nir", "'delay'", "SPIKELINE_MAX_BYTES")


def test_prophesee_header_claiming_20000x20000(tmp_path, capsys, export_dir):
    data = real_path("prophesee_evt2.raw").read_bytes()
    path = tmp_path / "big.raw"
    header_end = data.index(b"% evt 2.0\n") + len(b"% evt 2.0\n")
    path.write_bytes(b"% geometry 20000x20000\n" + data[:header_end + 400_000])
    refused(["simulate", export_dir, "--events", path, "--T", "10"], capsys,
            "20000x20000", "SPIKELINE_MAX_BYTES")


def test_input_with_T_20000(tmp_path, capsys, export_dir):
    path = tmp_path / "long.npy"  # a header claiming T = 20000; the data need not be there
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 2, 34, 34), np.float32))
    header["shape"] = (20000, 1, 2, 34, 34)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 1024)
    refused(["simulate", export_dir, "--input", path], capsys, "T = 20000",
            "SPIKELINE_MAX_BYTES")


def test_huge_but_consistent_nir_shapes(tmp_path, capsys):
    shape = np.array([2, 40000, 40000])
    nodes = {"input": nir.Input(input_type={"input": shape}),
             "pool": nir.SumPool2d(kernel_size=np.array([1, 1]), stride=np.array([1, 1]),
                                   padding=np.array([0, 0])),
             "output": nir.Output(output_type={"output": shape})}
    path = tmp_path / "huge.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=[("input", "pool"), ("pool", "output")]))
    refused(["simulate", path, "--input", _input(tmp_path, (1,))], capsys, "huge.nir",
            "SPIKELINE_MAX_BYTES")


def test_the_size_limit_can_be_raised(tmp_path, capsys, monkeypatch):
    graph = _delay_graph(tmp_path / "d.nir", 1.0)  # 10,000 steps of 4 neurons: 160 KB
    monkeypatch.setenv("SPIKELINE_MAX_BYTES", "1000")
    refused(["simulate", graph, "--input", _input(tmp_path, (4,))], capsys, "1000")
    monkeypatch.setenv("SPIKELINE_MAX_BYTES", str(1 << 30))
    assert run(["simulate", graph, "--input", _input(tmp_path, (4,))], capsys)[0] == 0


# ---- 3 and 4. NIR files: refused, not run ---------------------------------------------------

def _lif_graph(path, metadata=None, **params):
    values = {"tau": np.full(3, 2e-3), "r": np.ones(3), "v_leak": np.zeros(3),
              "v_threshold": np.ones(3), **params}
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "linear": nir.Linear(weight=params.pop("weight", np.eye(3))),
             "lif": nir.LIF(**{k: v for k, v in values.items() if k != "weight"}),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "linear"), ("linear", "lif"), ("lif", "output")]
    return _write_graph(path, nodes, edges, metadata)


@pytest.mark.parametrize("case, named", [
    ({"tau": np.zeros(3)}, "'tau'"),
    ({"tau": np.full(3, -1e-3)}, "'tau'"),
    ({"v_threshold": np.full(3, np.inf)}, "'v_threshold'"),
    ({"v_threshold": np.array([1.0, np.nan, 1.0])}, "'v_threshold'"),
    ({"weight": np.full((3, 3), np.nan)}, "'weight'"),
    ({"weight": np.full((3, 3), -np.inf)}, "'weight'"),
    ({"metadata": {"dt": "abc"}}, "dt"),
    ({"metadata": {"dt": 0.0}}, "dt"),
    ({"metadata": {"dt": float("nan")}}, "dt"),
    ({"metadata": {"dt": -1e-4}}, "dt"),
])
def test_nir_parameters_refused(tmp_path, capsys, case, named):
    case = dict(case)
    path = _lif_graph(tmp_path / "g.nir", metadata=case.pop("metadata", None), **case)
    x = _input(tmp_path, (3,))
    refused(["simulate", path, "--input", x], capsys, "g.nir", named)
    refused(["energy", path, "--input", x], capsys, "g.nir", named)
    refused(["import", path, "--out", tmp_path / "o.nir"], capsys, "g.nir", named)


def test_nan_delay(tmp_path, capsys):
    refused(["simulate", _delay_graph(tmp_path / "d.nir", np.nan), "--input",
             _input(tmp_path, (4,))], capsys, "d.nir", "'delay'")


@pytest.mark.parametrize("dt", ["0", "nan", "-1", "inf", "abc"])
def test_dt_option_refused(tmp_path, capsys, dt):
    path = _lif_graph(tmp_path / "g.nir")
    code, err = run(["simulate", path, "--input", _input(tmp_path, (3,)), "--dt", dt], capsys)
    assert code == 2 and "--dt" in err


def test_nan_and_inf_inputs_refused(tmp_path, capsys):
    path = _lif_graph(tmp_path / "g.nir")
    for bad in (np.nan, np.inf):
        x = np.ones((3, 3), np.float32)
        x[1, 1] = bad
        np.save(tmp_path / "bad.npy", x)
        refused(["simulate", path, "--input", tmp_path / "bad.npy"], capsys, "bad.npy",
                "NaN or Inf")


@FUZZ
@given(cut=st.one_of(st.none(), st.floats(0, 1)), where=st.floats(0, 1), bit=st.integers(0, 7))
def test_nir_file_truncated_or_flipped(tmp_path, capsys, export_dir, cut, where, bit):
    data = bytearray((export_dir / "model.nir").read_bytes())
    if cut is not None:
        data = data[:max(1, int(len(data) * cut))]
    data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    path = tmp_path / "m.nir"
    path.write_bytes(data)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 1, 2, 34, 34), np.float32))
    code, err = run(["simulate", path, "--input", x], capsys)
    assert code in (0, 2) and (code == 0 or "m.nir" in err)


# ---- 3. netx files: 24 mutations, then random flips -----------------------------------------

def _set(key, value):
    def mutate(f):
        del f[key]
        f[key] = value
    return mutate


NETX_MUTATIONS = {
    "string weight": _set("layer/0/weight", "abc"),
    "string dense weight": _set("layer/5/weight", np.bytes_("w")),
    "scalar shape": _set("layer/0/shape", 16),
    "shape of zeros": _set("layer/0/shape", np.array([0, 0, 0])),
    "4-element shape": _set("layer/2/shape", np.array([32, 16, 16, 1])),
    "iDecay 5000": _set("layer/0/neuron/iDecay", 5000),
    "negative vDecay": _set("layer/2/neuron/vDecay", -1),
    "vThMant 0": _set("layer/0/neuron/vThMant", 0),
    "vThMant NaN": _set("layer/5/neuron/vThMant", np.nan),
    "stride 0": _set("layer/0/stride", np.array([0, 0])),
    "negative padding": _set("layer/2/padding", np.array([-1, -1])),
    "groups 0": _set("layer/0/groups", 0),
    "groups 3": _set("layer/2/groups", 3),
    "3-element kernel": _set("layer/0/kernelSize", np.array([3, 3, 3])),
    "kernel not the weight's": _set("layer/0/kernelSize", np.array([5, 5])),
    "NaN weight": _set("layer/5/weight", np.full((128, 2048), np.nan, np.float32)),
    "weight of wrong shape": _set("layer/6/weight", np.ones((10, 7), np.float32)),
    "neuron type LIF": _set("layer/0/neuron/type", np.bytes_("LIF")),
    "layer type abc": _set("layer/1/type", np.array([b"abc"])),
    "no neuron": lambda f: f.__delitem__("layer/0/neuron"),
    "no weight": lambda f: f.__delitem__("layer/2/weight"),
    "layer key abc": lambda f: f.move("layer/3", "layer/abc"),
    "a layer missing": lambda f: f.__delitem__("layer/3"),
    "no layers": lambda f: f.__delitem__("layer"),
}


@pytest.mark.parametrize("mutation", list(NETX_MUTATIONS))
def test_mutated_netx_files(tmp_path, capsys, export_dir, mutation):
    path = tmp_path / "m.net"
    shutil.copyfile(export_dir / "model.net", path)
    with h5py.File(path, "r+") as f:
        NETX_MUTATIONS[mutation](f)
    refused(["import", path, "--out", tmp_path / "o.nir"], capsys, "m.net")
    assert not (tmp_path / "o.nir").exists()


@FUZZ
@given(where=st.floats(0, 1), bit=st.integers(0, 7), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_netx_byte_flips(tmp_path, capsys, export_dir, where, bit, cut):
    data = bytearray((export_dir / "model.net").read_bytes())
    if cut is not None:
        data = data[:max(1, int(len(data) * cut))]
    data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    path = tmp_path / "f.net"
    path.write_bytes(data)
    code, err = run(["import", path, "--out", tmp_path / "o.nir", "--no-delay-shift"], capsys)
    assert code in (0, 2) and (code == 0 or "f.net" in err)


# ---- 3. export folders: folded.pt, metadata.json, the manifest ------------------------------

def test_truncated_folded_pt(export_copy, capsys, x_npy):
    folded = export_copy / "folded.pt"
    folded.write_bytes(folded.read_bytes()[:5000])
    refused(["verify", export_copy, "--input", x_npy, "--backends", "nir"], capsys,
            "folded.pt", "manifest.json")
    write_manifest(export_copy)  # even with a manifest that agrees: a clear error
    refused(["verify", export_copy, "--input", x_npy, "--backends", "nir"], capsys,
            "folded.pt", "not a readable folded model")


def test_malicious_folded_pt(export_copy, capsys, x_npy, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model_spec": CNN_SPEC, "state_dict": Payload()}, export_copy / "folded.pt")
    write_manifest(export_copy)
    refused(["verify", export_copy, "--input", x_npy, "--backends", "nir"], capsys,
            "folded.pt")
    assert not (tmp_path / "pwned").exists()


def test_folded_pt_with_a_huge_spec(export_copy, capsys, x_npy):
    torch.save({"model_spec": dict(CNN_SPEC, name="resnet18", width=10**6), "state_dict": {}},
               export_copy / "folded.pt")
    write_manifest(export_copy)
    refused(["verify", export_copy, "--input", x_npy, "--backends", "nir"], capsys,
            "folded.pt", "SPIKELINE_MAX_BYTES")


@pytest.mark.parametrize("content", ["{}", "[]", '{"input_shape": "abc"}', "not json"])
def test_bad_metadata_json(export_copy, capsys, x_npy, content):
    (export_copy / "metadata.json").write_text(content)
    write_manifest(export_copy)
    refused(["verify", export_copy, "--input", x_npy, "--backends", "nir"], capsys,
            "metadata.json")


def test_files_of_two_exports_are_refused(export_copy, capsys, x_npy, tmp_path):
    torch.manual_seed(1)
    other = tmp_path / "other"
    export_model(build_model("cnn"), CNN_SPEC, other, config={"T": 4})
    shutil.copyfile(other / "model.nir", export_copy / "model.nir")
    for command in (["simulate", export_copy, "--input", x_npy],
                    ["energy", export_copy, "--input", x_npy],
                    ["verify", export_copy, "--input", x_npy, "--backends", "nir"]):
        refused(command, capsys, "model.nir", "manifest.json")
    (export_copy / "manifest.json").unlink()  # an interrupted export
    refused(["simulate", export_copy, "--input", x_npy], capsys, "no manifest.json")


# ---- 3. outputs: existing files, missing or read-only folders, a full disk ------------------

@pytest.fixture
def run_dir(tmp_path):
    from spikeline.pipeline.checkpoint import FORMAT, save_checkpoint

    torch.manual_seed(0)
    model = build_model("cnn")
    save_checkpoint(tmp_path / "run" / "best.pt",
                    {"format": FORMAT, "model_spec": CNN_SPEC, "config": {"T": 4},
                     "model_stripped": model.state_dict()})
    return tmp_path / "run"


def test_out_that_is_a_file_or_cannot_be_made(run_dir, tmp_path, capsys, monkeypatch, x_npy,
                                              export_dir):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    refused(["export", run_dir, "--out", a_file], capsys, "--out", "existing file")
    refused(["export", run_dir, "--out", a_file / "sub"], capsys, "--out", "cannot create")
    refused(["simulate", export_dir, "--input", x_npy, "--save-output", a_file / "o.npy"],
            capsys, "--save-output")
    refused(["energy", export_dir, "--input", x_npy, "--json", a_file / "o.json"], capsys,
            "--json")
    refused(["energy", export_dir, "--input", x_npy, "--report", a_file], capsys, "--report")
    refused(["import", export_dir / "model.nir", "--out", tmp_path], capsys, "--out", "folder")
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(read_only)
                        else real_access(p, mode))  # root ignores the mode
    refused(["export", run_dir, "--out", read_only], capsys, "--out", "not writable")
    refused(["data", "show", "ndigits", "--out", read_only / "x.png"], capsys, "--out")


def test_a_missing_out_folder_is_created(run_dir, tmp_path, capsys):
    out = tmp_path / "new" / "export"
    assert run(["export", run_dir, "--out", out], capsys)[0] == 0
    assert (out / "manifest.json").is_file()


def _disk_full_after(monkeypatch, limit=0):
    """Files opened by spikeline.atomic fail with ENOSPC once ``limit`` bytes are written."""
    import io

    import spikeline.atomic as atomic

    class Full(io.FileIO):
        written = 0

        def write(self, data):
            Full.written += len(data)
            if Full.written > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(atomic, "open", lambda path, mode="rb": Full(path, mode.replace("b", "")),
                        raising=False)


def test_full_disk_during_export_keeps_the_previous_export(run_dir, tmp_path, capsys,
                                                          monkeypatch, x_npy):
    out = tmp_path / "export"
    assert run(["export", run_dir, "--out", out], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import spikeline.deploy.export as export

    real_save = export.torch.save

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export.torch, "save", full)
    refused(["export", run_dir, "--out", out], capsys, "no space left on device", "folded.pt")
    monkeypatch.setattr(export.torch, "save", real_save)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no .tmp left either
    assert run(["simulate", out, "--input", x_npy], capsys)[0] == 0  # still a valid export


def test_full_disk_on_save_output_and_json(export_dir, tmp_path, capsys, monkeypatch, x_npy):
    saved, report = tmp_path / "out.npy", tmp_path / "energy.json"
    assert run(["simulate", export_dir, "--input", x_npy, "--save-output", saved], capsys)[0] == 0
    assert run(["energy", export_dir, "--input", x_npy, "--json", report], capsys)[0] == 0
    good = saved.read_bytes(), report.read_bytes()
    _disk_full_after(monkeypatch, limit=100)
    refused(["simulate", export_dir, "--input", x_npy, "--save-output", saved], capsys,
            "no space left on device", saved)
    refused(["energy", export_dir, "--input", x_npy, "--json", report], capsys,
            "no space left on device", report)
    assert (saved.read_bytes(), report.read_bytes()) == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_leftover_tmp_files_are_cleaned_up_by_the_next_write(tmp_path):
    from spikeline.atomic import atomic_text

    target = tmp_path / "report.json"
    dead = tmp_path / ".report.json.999999999.abcd.tmp"  # pid that cannot be running
    old_style = tmp_path / ".report.json.k2j4.tmp"
    alive = tmp_path / f".report.json.{os.getppid()}.efgh.tmp"  # a writer still at work
    other = tmp_path / ".other.json.999999999.x.tmp"
    longer = tmp_path / ".report.json.bak.999999999.x.tmp"  # report.json.bak's, not ours
    for p in (dead, old_style, alive, other, longer):
        p.write_text("partial")
    atomic_text(target, "{}")
    assert target.read_text() == "{}"
    assert not dead.exists() and not old_style.exists()
    assert alive.exists() and other.exists() and longer.exists()


# ---- 4. options that were silently accepted -------------------------------------------------

def test_export_with_no_format_keeps_the_previous_export(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert run(["export", run_dir, "--out", out], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for value in ("", ",", "onnx"):
        refused(["export", run_dir, "--out", out, "--format", value], capsys, "--format")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_netx_skipped_only_when_unsupported(run_dir, tmp_path, capsys, monkeypatch):
    import spikeline.deploy.export as export

    def broken(*args):
        raise KeyError("an internal error")

    monkeypatch.setattr(export, "write_netx", broken)
    with pytest.raises(KeyError):  # a bug surfaces; it is not reported as "netx skipped"
        main(["export", str(run_dir), "--out", str(tmp_path / "e")])
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_metadata_input_shape_written_and_manifest_lists_every_file(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.nir", "model.net", "folded.pt", "metadata.json"}
    assert json.loads((export_dir / "metadata.json").read_text())["input_shape"] == [2, 34, 34]


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["folded.pt", "metadata.json"]), where=st.floats(0, 1),
       bit=st.integers(0, 7), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_export_files_truncated_or_flipped(export_dir, tmp_path_factory, name, where, bit, cut):
    """Even under a manifest that agrees (rewritten after the damage), loading the folded
    reference either works or raises a SpikelineError naming the file."""
    from spikeline.deploy.export import load_folded
    from spikeline.errors import SpikelineError

    folder = tmp_path_factory.mktemp("damaged")
    shutil.copytree(export_dir, folder, dirs_exist_ok=True)
    data = bytearray((folder / name).read_bytes())
    if cut is not None:
        data = data[:max(1, int(len(data) * cut))]
    data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    (folder / name).write_bytes(data)
    write_manifest(folder)
    try:
        load_folded(folder)
    except SpikelineError as err:
        assert name in str(err) or "metadata.json" in str(err)


def test_cifar10dvs_loader_shares_the_aedat4_checks(tmp_path, monkeypatch):
    """The CIFAR10-DVS loader reads AEDAT4 through Tonic; the same structure check and panic
    catch apply, and a corrupt timestamp is refused there too."""
    import tonic

    from spikeline.datasets import cifar10dvs
    from spikeline.datasets.registry import load_dataset
    from spikeline.errors import BadInput

    monkeypatch.setattr(tonic.datasets.CIFAR10DVS, "_check_exists", lambda self: True)
    for label, name in enumerate(cifar10dvs.CLASSES):
        folder = tmp_path / "CIFAR10DVS" / name
        folder.mkdir(parents=True)
        for k in range(10):
            t, x, y, p = random_events(100, 128, 128, seed=100 * label + k)
            write_aedat4(folder / f"cifar10_{name}_{k}.aedat4", t, x, y, p)
    dataset = load_dataset("cifar10dvs", "train", data_dir=tmp_path, cache_dir=tmp_path / "c")
    flipped = bytearray(real_path("davis346_street.aedat4").read_bytes())
    flipped[2728] ^= 0x80  # the byte that makes aedat panic
    path = dataset.samples.path(3)
    with open(path, "wb") as fh:
        fh.write(flipped)
    with pytest.raises(BadInput, match="description"):
        dataset[3]
    monkeypatch.setattr("spikeline.datasets.tonic_offline.check_aedat4", lambda p: None)
    with pytest.raises(BadInput, match="corrupt"):  # the panic itself, caught
        dataset[3]
    t, x, y, p = random_events(100, 128, 128, seed=7)
    t[50] = 6 * 10**16
    write_aedat4(dataset.samples.path(4), t, x, y, p)
    with pytest.raises(BadInput, match="corrupt timestamp"):
        dataset[4]


def test_export_of_an_unfinished_run_says_its_accuracy_was_not_measured(run_dir, tmp_path,
                                                                        capsys):
    """No summary.json (training did not finish): the export is written, and the deployed
    accuracy is reported as not measured, never as a number."""
    code, err = run(["export", run_dir, "--out", tmp_path / "e"], capsys)
    assert code == 0 and (tmp_path / "e" / "manifest.json").is_file()
    assert "deployed accuracy: not measured" in err and "summary.json" in err


# ---- issue 18: what the 569-run campaign still found -----------------------------------------

def _structure_graph(path, edges, output=True):
    """input -> a (Linear) -> b (Linear) -> lif -> output, wired by ``edges``."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "a": nir.Linear(weight=np.eye(3)), "b": nir.Linear(weight=np.eye(3)),
             "lif": nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3),
                            v_threshold=np.ones(3))}
    if output:
        nodes["output"] = nir.Output(output_type={"output": np.array([3])})
    return _write_graph(path, nodes, edges)


@pytest.mark.parametrize("edges, output, named", [
    ([("input", "a"), ("a", "b"), ("b", "lif")], False, "no Output node"),
    ([("input", "a"), ("a", "b"), ("b", "a"), ("b", "lif"), ("lif", "output")], True,
     "the cycle a -> b -> a passes through no neuron or delay"),
    ([("input", "a"), ("a", "a"), ("a", "b"), ("b", "lif"), ("lif", "output")], True,
     "the cycle a -> a passes through no neuron or delay"),
    ([("input", "a"), ("a", "b"), ("lif", "output")], True,
     "['lif', 'output'] are not reached from the Input node 'input': an edge into them is "
     "missing"),
], ids=["no-output", "stateless-cycle", "stateless-self-loop", "missing-edge"])
def test_graph_structure_refused(tmp_path, capsys, edges, output, named):
    path = _structure_graph(tmp_path / "g.nir", edges, output)
    x = _input(tmp_path, (3,))
    refused(["simulate", path, "--input", x], capsys, "g.nir", named)
    refused(["energy", path, "--input", x], capsys, "g.nir", named)
    refused(["import", path, "--out", tmp_path / "o.nir"], capsys, "g.nir", named)


def test_a_cycle_through_a_neuron_is_accepted(tmp_path, capsys):
    path = _structure_graph(tmp_path / "g.nir", [("input", "a"), ("a", "lif"), ("lif", "b"),
                                                 ("b", "lif"), ("lif", "output")])
    assert run(["simulate", path, "--input", _input(tmp_path, (3,))], capsys)[0] == 0


@pytest.mark.parametrize("values, named", [
    (np.full((4, 2, 34, 34), 2**62, dtype=np.int64), "2**24"),
    (np.full((4, 2, 34, 34), -5, dtype=np.int64), "negative values (min -5)"),
    (np.full((4, 2, 34, 34), -0.5, dtype=np.float32), "negative values"),
], ids=["int64-2**62", "all-minus-5", "negative-float"])
def test_input_values_refused(export_dir, tmp_path, capsys, values, named):
    path = tmp_path / "x.npy"
    np.save(path, values)
    refused(["simulate", export_dir, "--input", path], capsys, path, named)


def test_input_counts_up_to_2_24_are_accepted(export_dir, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.full((2, 2, 34, 34), 2**24, dtype=np.int64))
    assert run(["simulate", export_dir, "--input", path], capsys)[0] == 0


def test_full_disk_as_numpy_reports_it(export_dir, tmp_path, capsys, monkeypatch, x_npy):
    """numpy's tofile reports a short write as "N requested and M written" without errno."""
    saved = tmp_path / "out.npy"

    def short_write(*args, **kwargs):
        raise OSError("3328 requested and 0 written")

    monkeypatch.setattr(np.lib.format, "write_array", short_write)
    refused(["simulate", export_dir, "--input", x_npy, "--save-output", saved], capsys,
            "no space left on device", saved)
    assert not saved.exists()


def test_best_pt_without_model_stripped(run_dir, tmp_path, capsys):
    from spikeline.pipeline.checkpoint import save_checkpoint

    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    del ckpt["model_stripped"]
    save_checkpoint(run_dir / "best.pt", ckpt)
    refused(["export", run_dir, "--out", tmp_path / "e"], capsys, "best.pt", "'model_stripped'")


def test_checkpoint_whose_spec_names_another_model(run_dir, tmp_path, capsys):
    from spikeline.pipeline.checkpoint import save_checkpoint

    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    ckpt["model_spec"] = {**ckpt["model_spec"], "name": "vgg11", "width": 8}
    save_checkpoint(run_dir / "last.pt", ckpt)
    refused(["export", run_dir, "--checkpoint", "last", "--out", tmp_path / "e"], capsys,
            "last.pt", "do not fit the network", "'vgg11'")


@pytest.mark.parametrize("damage", ["unreadable", "refused"])
def test_an_unreadable_best_pt_is_an_error_never_replaced(run_dir, tmp_path, capsys,
                                                          monkeypatch, damage):
    """best.pt cannot be read (mode 000 for an ordinary user; a pickle weights_only refuses):
    export and evaluate exit 2 naming it, and it is not replaced by last.pt."""
    from spikeline.pipeline.checkpoint import save_checkpoint

    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    save_checkpoint(run_dir / "last.pt", {**ckpt, "epoch": 3, "best": {"epoch": 3}})
    if damage == "unreadable":
        (run_dir / "best.pt").chmod(0)
        real_load = torch.load

        def denied(f, *args, **kwargs):  # root ignores the mode: as for an ordinary user
            if os.fspath(f) == os.fspath(run_dir / "best.pt"):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(f))
            return real_load(f, *args, **kwargs)

        monkeypatch.setattr(torch, "load", denied)
    else:  # a pickle naming os.system: weights_only refuses it
        (run_dir / "best.pt").write_bytes(b"\x80\x04cos\nsystem\n.")
    before = (run_dir / "best.pt").read_bytes() if damage == "refused" else None
    refused(["export", run_dir, "--out", tmp_path / "e"], capsys, "best.pt")
    refused(["evaluate", run_dir], capsys, "best.pt")
    (run_dir / "best.pt").chmod(0o644)
    if before is not None:
        assert (run_dir / "best.pt").read_bytes() == before
    assert (run_dir / "best.pt").read_bytes() != (run_dir / "last.pt").read_bytes()


def test_data_show_names_the_T_option(tmp_path, capsys):
    code, err = run(["data", "show", "ndigits", "--T", "0", "--out", tmp_path / "s.png"], capsys)
    assert code == 2 and "--T" in err and "n_time_bins" not in err, err
