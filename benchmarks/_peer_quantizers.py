"""Build the ONNX models a user would get from optiserve's peers, each called the way its guide shows.

Runs in its own environment (never the project's: these tools pin their own onnx/onnxruntime/torch):
    python3 -m venv build/peers-venv
    build/peers-venv/bin/pip install nncf onnx-neural-compressor olive-ai onnxruntime onnx

Usage: build/peers-venv/bin/python benchmarks/_peer_quantizers.py FP32.onnx CALIBRATION.npz OUT_DIR
Writes OUT_DIR/<peer>.onnx for each peer that succeeds and OUT_DIR/peers.json (which ran, which failed and why).
The calibration file holds one array per model input (or `inputs`); `labels`/`y` arrays are ignored.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnx

LABELS = {"labels", "label", "y", "target", "targets", "class"}


def calibration_feeds(model_path: Path, npz: Path, limit: int = 300) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds for the model's inputs from the .npz (a single non-label array feeds a single input)."""
    names = [i.name for i in onnx.load(str(model_path), load_external_data=False).graph.input]
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files if k.lower() not in LABELS}
    if set(names) <= set(arrays):
        chosen = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) == 1:
        chosen = {names[0]: next(iter(arrays.values()))}
    else:
        raise SystemExit(f"calibration arrays {sorted(arrays)} do not match model inputs {names}")
    rows = min(len(a) for a in chosen.values())
    return [{n: a[i:i + 1].astype(np.float32) for n, a in chosen.items()} for i in range(min(rows, limit))]


def nncf_default(model: Path, feeds: list, out: Path) -> None:
    import nncf

    quantized = nncf.quantize(onnx.load(str(model)), nncf.Dataset(feeds), subset_size=len(feeds))
    onnx.save(quantized, str(out))


def _inc_reader(feeds: list):
    from onnx_neural_compressor import data_reader

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return Reader()


def inc_static(model: Path, feeds: list, out: Path) -> None:
    from onnx_neural_compressor.quantization import config, quantize

    quantize(str(model), str(out), config.StaticQuantConfig(calibration_data_reader=_inc_reader(feeds)))


def inc_dynamic(model: Path, feeds: list, out: Path) -> None:
    from onnx_neural_compressor.quantization import config, quantize

    quantize(str(model), str(out), config.DynamicQuantConfig())


OLIVE_SCRIPT = '''
import numpy as np
from olive.data.registry import Registry

@Registry.register_dataset()
def npz_feeds(path, names):
    data = np.load(path)
    return [({n: data[n][i] for n in names}, 0) for i in range(len(data[names[0]]))]
'''


def _olive(model: Path, feeds: list, out: Path, pass_config: dict) -> None:
    from olive import run

    with tempfile.TemporaryDirectory() as tmp:
        names = list(feeds[0])
        np.savez(Path(tmp) / "feeds.npz", **{n: np.concatenate([f[n] for f in feeds]) for n in names})
        (Path(tmp) / "user_script.py").write_text(OLIVE_SCRIPT)
        config = {
            "input_model": {"type": "ONNXModel", "model_path": str(model)},
            "passes": {"quantize": pass_config},
            "output_dir": str(Path(tmp) / "out"),
            "log_severity_level": 3,
        }
        if "data_config" in pass_config:  # registered once per process: Olive refuses a second registration
            config["data_configs"] = [{
                "name": "calib", "user_script": str(Path(tmp) / "user_script.py"),
                "load_dataset_config": {"type": "npz_feeds", "path": str(Path(tmp) / "feeds.npz"), "names": names}}]
        run(config)
        produced = sorted((Path(tmp) / "out").rglob("*.onnx"))
        if not produced:
            raise RuntimeError("Olive wrote no .onnx file")
        model_proto = onnx.load(str(produced[0]))  # weights may sit in a .data file beside it
        onnx.save(model_proto, str(out))


def olive_static(model: Path, feeds: list, out: Path) -> None:
    _olive(model, feeds, out, {"type": "OnnxStaticQuantization", "data_config": "calib"})


def olive_dynamic(model: Path, feeds: list, out: Path) -> None:
    _olive(model, feeds, out, {"type": "OnnxDynamicQuantization"})


PEERS = {"nncf": nncf_default, "inc-static": inc_static, "inc-dynamic": inc_dynamic,
         "olive-static": olive_static, "olive-dynamic": olive_dynamic}


def main() -> None:
    model, npz, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    feeds = calibration_feeds(model, npz)
    summary = {}
    for name, build in PEERS.items():
        start = time.perf_counter()
        try:
            build(model, feeds, out / f"{name}.onnx")
            summary[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 1)}
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, the others still run
            traceback.print_exc()
            summary[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        print(f"{name}: {summary[name]}", flush=True)
    (out / "peers.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
