"""Other formats and tools: Caffe prototxt import/export, ONNX and JSON export, IR -> source,
backend comparison. Their commands are in :mod:`alexdsl.cli.interop`."""
