"""Other formats and tools: Caffe prototxt import/export, ONNX and JSON export, IR -> source,
backend comparison, and the click commands for them (``alexdsl.interop.commands.COMMANDS``)."""
