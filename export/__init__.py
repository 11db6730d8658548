"""Export COREBA to ONNX (recurrent loop unrolled, weights shared) and TensorRT, with parity checks."""
