# One-off: ONNX Runtime's stock quantizers applied to kvpred's own fp32 base-only graph.
# Usage: python3 examples/ort_quantizers.py BUNDLE/onnx/model_base.onnx OUT_DIR q8|q4
# (pip install onnx onnxruntime onnx_ir). See examples/ort_quantizers.ts for the timing.
import sys, onnx
from onnxruntime.quantization import quantize_dynamic, QuantType
src, out = sys.argv[1], sys.argv[2]
which = sys.argv[3]
if which == "q8":
    # The tied LM head (Gemm, transB) shares the embedding table with the Gather; the quantizer
    # transposes that shared table for the Gemm and breaks the Gather. Give the head its own copy.
    model = onnx.load(src)
    emb = next(t for t in model.graph.initializer if t.name.endswith("token_embeddings.weight"))
    head = onnx.TensorProto()
    head.CopyFrom(emb)
    head.name = emb.name + ".head"
    model.graph.initializer.append(head)
    for n in model.graph.node:
        if n.op_type == "Gemm" and n.input[1] == emb.name:
            n.input[1] = head.name
    src = f"{out}/base_untied.onnx"
    onnx.save_model(model, src, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="base_untied.onnx_data")
    del model
    # MatMul only: with the default op types the quantizer also rewrites the embedding Gather,
    # whose table the tied LM head (Gemm) shares, and the graph no longer loads.
    quantize_dynamic(src, f"{out}/base_ort_q8.onnx", weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], use_external_data_format=True)
    # The quantizer records value_info from its own shape inference, which gets the embedding
    # Gather's output wrong ([., ., 32000] for [., ., 2048]); ORT then refuses the graph. Drop it.
    m = onnx.load(f"{out}/base_ort_q8.onnx", load_external_data=False)
    del m.graph.value_info[:]
    onnx.save_model(m, f"{out}/base_ort_q8.onnx")
else:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    model = onnx.load(src)
    q = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    onnx.save_model(q.model.model, f"{out}/base_ort_q4.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="base_ort_q4.onnx_data")
print("done", which)
