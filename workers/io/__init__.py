"""I/O adapters: files (npz/HDF5/CXI/TIFF), ID01 BLISS scans, Tiled; thin wrappers around the physics core."""
