"""Models leaving refbnn (docs/semantics.md §13): `onnx`, a standard graph whose float
decisions equal the integer model's, and `statedict`, tensors with a layout file; `refbnn
import` reads both back unchanged."""
