"""Files and values at the edge: the model JSON, data and mask `.npz` files, atomic
writing, the JSON form of exact numbers and the parsing of option values.

Everything read here is validated before use; a bad file or value raises an
`InputError` whose message names the file (or option) and the field.
"""
