"""Models leaving refbnn (docs/semantics.md §13): `onnx`, a standard graph whose float
decisions equal the integer model's, which `refbnn import` reads back unchanged."""
