"""Tests of the Python relay client; run ``python3 -m unittest discover`` in clients/python."""
