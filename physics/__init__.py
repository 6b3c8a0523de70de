"""Physics core: plain functions and small operators on arrays, with no I/O.

Simulation, phasing operators, alignment, metrics, preprocessing and strain live here;
every adapter (files, Tiled, Redis, HTTP) sits outside and calls in.
"""
