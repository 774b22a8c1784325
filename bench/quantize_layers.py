"""Layer by layer: where int8 quantization moves the landmark model (the measurement behind FLOAT_NODES).

    PYTHONPATH=. .venv/bin/python bench/quantize_layers.py [--model heavy] [--inputs 2] [--top 25]
        [--variant all|first:N|op:Add|...]

Uses ONNX Runtime's quantization debugging tools (onnxruntime.quantization.qdq_loss_debug): both the fp32
model and an int8 model are augmented to output every intermediate tensor, run on the project's own
calibration crops (engines/calibration_set.py drawings, never a photo), and matched tensor by tensor.
Prints, in graph order, each tensor's SQNR in dB:
  xmodel: fp32 tensor vs the int8 model's tensor (the error accumulated up to that layer);
  qdq:    the int8 model's tensor before vs after its own QuantizeLinear/DequantizeLinear (that layer's
          own rounding).
ReLU6 (Clip) rows: ONNX Runtime folds a Clip into the QuantizeLinear after its convolution, so their qdq
figure compares the unclipped with the clipped tensor and reads low; judge those rows by xmodel.
Then the landmark drift of the int8 model on those crops (median px in the 256-px crop, raw and after
heatmap refinement). --variant quantizes a copy with other nodes kept in float first (same syntax as
engines/quantize.FLOAT_NODES, comma-separated), to try a candidate before changing the recipe.
Works in a temporary folder; reads the models from models.dir (SKELETON_MODELS_DIR), writes nothing there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="heavy", choices=("lite", "full", "heavy"))
    parser.add_argument("--inputs", type=int, default=2, help="crop batches compared (each is a crop + mirror)")
    parser.add_argument("--top", type=int, default=25, help="also list the N tensors with the worst own rounding")
    parser.add_argument("--variant", default="", help="nodes kept in float for a trial quantization")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from daemon import pose
    from daemon.config import load_config
    from engines import models, quantize

    models_dir = Path(load_config().models.dir)
    fp32_path = models_dir / models.ONNX_FILES[args.model]
    _, crops = quantize.calibration_inputs(models_dir / models.ONNX_FILES["detector"], count=max(4, args.inputs))
    # Odd batches are the jittered crops: compare on those the ROI found, like the daemon's.
    inputs = crops[0:2 * args.inputs:2]
    with tempfile.TemporaryDirectory(prefix="quantize-layers-") as work:
        work_dir = Path(work)
        int8_path = models_dir / models.INT8_FILES[args.model]
        if args.variant or not int8_path.is_file():
            int8_path = work_dir / "trial.int8.onnx"
            keep = [entry for entry in args.variant.split(",") if entry]
            excluded = quantize.float_node_names(fp32_path, keep)
            print(f"quantizing a trial copy, {len(excluded)} nodes in float ...", flush=True)
            quantize.quantize_model(fp32_path, int8_path, crops, excluded)
        prepared = work_dir / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        float_aug, int8_aug = work_dir / "fp32.aug.onnx", work_dir / "int8.aug.onnx"
        modify_model_output_intermediate_tensors(str(prepared), str(float_aug))
        modify_model_output_intermediate_tensors(str(int8_path), str(int8_aug))
        feeds = [{"input_1": batch} for batch in inputs]
        matching = create_activation_matching(
            collect_activations(str(int8_aug), feeds), collect_activations(str(float_aug), feeds)
        )
        errors = compute_activation_error(matching)

        import onnx

        graph = onnx.load(str(prepared), load_external_data=False).graph
        order = {out: (index, node.op_type, node.name) for index, node in enumerate(graph.node) for out in node.output}
        rows = sorted(
            ((order[name], err.get("xmodel_err"), err.get("qdq_err")) for name, err in errors.items() if name in order),
            key=lambda row: row[0][0],
        )
        print(f"{'#':>4} {'op':<10} {'xmodel dB':>9} {'qdq dB':>8}  node")
        for (index, op, name), xmodel, qdq in rows:
            print(f"{index:>4} {op:<10} {xmodel if xmodel is not None else float('nan'):>9.1f} "
                  f"{qdq if qdq is not None else float('nan'):>8.1f}  {name[-70:]}")
        worst = sorted((row for row in rows if row[2] is not None), key=lambda row: row[2])[: args.top]
        print(f"\nworst own rounding (qdq dB), {args.top}:")
        for (index, op, name), _, qdq in worst:
            print(f"{index:>4} {op:<10} {qdq:>8.1f}  {name[-70:]}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for path in (fp32_path, int8_path)]
        raw, refined = [], []
        for batch in inputs:
            outs = []
            for session in sessions:
                names = [output.name for output in session.get_outputs()]
                outs.append(dict(zip(names, session.run(names, {"input_1": batch}))))
            a, b = (pose.decode_crop(out, 0) for out in outs)
            xy = [out["Identity"].reshape(-1, pose.NUM_LANDMARKS, 5)[0, :33, :2] for out in outs]
            raw.append(float(np.median(np.linalg.norm(xy[0] - xy[1], axis=1))))
            refined.append(float(np.median(np.linalg.norm(a.xy[:33] - b.xy[:33], axis=1))))
        print(f"\nlandmark drift int8 vs fp32 on {len(inputs)} crops: raw median {np.mean(raw):.2f} px, "
              f"after heatmap refinement {np.mean(refined):.2f} px (of 256)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
