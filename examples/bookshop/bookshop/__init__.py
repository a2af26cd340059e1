"""A small bookshop: the example application whose test suite uses ponykit's pytest plugin."""
