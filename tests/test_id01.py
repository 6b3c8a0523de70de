"""Tests for workers.io.id01: BLISS layout (VDS, external links, master files), masks, metadata, bad input."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from physics.errors import InputError
from physics.preprocess import crop, find_peak
from fixtures_tiled import PEAK_AT, synthetic_frames
from workers.io.id01 import (build_mask, detector_gap_mask, list_scans, load_scan, read_metadata, write_bliss_scan)

REAL = Path("/work/shared/data/id01_bliss_layout/PTO_STO_SL_0001.h5")
HOT = (400, 100)


def frame_stack():
    """The shared synthetic stack (simulated crystal in a 516x516 Maxipix stack) plus a hot pixel."""
    frames, intensity = synthetic_frames()
    frames[:, HOT[0], HOT[1]] = 10**6
    return frames, intensity


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A raw-data tree: sample PtNP, dataset 0001 with scans 1 (VDS, eta) and 2 (external link, phi, dscan)."""
    root = tmp_path_factory.mktemp("raw")
    frames, intensity = frame_stack()
    pixel_mask = np.zeros((516, 516), np.uint8)
    pixel_mask[10, 20] = pixel_mask[500, 480] = 1
    ds = write_bliss_scan(root, "PtNP", "0001", frames, scan=1, pixel_mask=pixel_mask,
                          angles={"delta": 36.0, "nu": 1.5, "phi": 10.0}, energy_eV=9000.0, distance_m=0.85,
                          monitor=np.linspace(1.0, 2.0, 32))
    write_bliss_scan(root, "PtNP", "0001", frames, scan=2, link="external", rocking_motor="phi",
                     rocking_range=(-0.5, 0.5), title="dscan phi -0.5 0.5 31 1")
    return {"root": root, "file": ds, "master": root / "PtNP" / "hc0000_PtNP.h5", "frames": frames,
            "intensity": intensity, "pixel_mask": pixel_mask}


def test_vds_scan_frames_mask_and_metadata(tree):
    frames, mask, meta = load_scan(tree["file"], "1.1")
    assert frames.dtype == np.float32 and frames.shape == (32, 516, 516)
    assert mask.dtype == bool and mask.shape == frames.shape
    # the crystal's counts come through the virtual dataset unchanged
    z0, r0, c0 = (p - 16 for p in PEAK_AT)
    np.testing.assert_array_equal(frames[z0:z0 + 32, r0:r0 + 32, c0:c0 + 32],
                                  tree["frames"][z0:z0 + 32, r0:r0 + 32, c0:c0 + 32])
    # masks: chip gap band, pixel_mask, hot pixel
    assert mask[:, 255:261, :].all() and mask[:, :, 255:261].all()
    assert not mask[:, 254, 100].any() and not mask[:, 100, 261].any()
    assert mask[:, 10, 20].all() and mask[:, 500, 480].all()
    assert mask[:, HOT[0], HOT[1]].all() and frames[:, HOT[0], HOT[1]].max() == 0
    assert not mask[z0:z0 + 32, r0:r0 + 32, c0:c0 + 32].any()  # the Bragg peak is not taken for hot pixels
    assert meta["hot_pixels"] == 1 and meta["pixel_mask_pixels"] == 2
    # metadata
    assert meta["detector"] == "mpx1x4" and meta["scan"] == "1.1"
    assert meta["energy_eV"] == 9000.0 and meta["distance_m"] == 0.85
    assert meta["wavelength_m"] == pytest.approx(1.37760e-10, rel=1e-4)
    assert meta["pixel_size_x_m"] == 55e-6 and meta["beam_center_x_px"] == 258.0
    assert (meta["delta_deg"], meta["nu_deg"], meta["phi_deg"]) == (36.0, 1.5, 10.0)
    assert meta["rocking_motor"] == "eta" and len(meta["rocking_angles_deg"]) == 32
    assert meta["rocking_step_deg"] == pytest.approx(1.0 / 31)


def test_external_link_phi_dscan_and_master_file(tree):
    frames1, mask1, _ = load_scan(tree["file"], "1.1")
    frames2, mask2, meta2 = load_scan(tree["master"], "2.1")  # resolves PtNP_0001_2.1 in the master file
    both = ~mask1 & ~mask2  # scan 2 was written without the pixel_mask
    np.testing.assert_array_equal(frames1[both], frames2[both])
    assert mask1.sum() - mask2.sum() == 2 * 32
    assert meta2["scan"] == "PtNP_0001_2.1"
    assert meta2["rocking_motor"] == "phi" and meta2["scan_command"] == "dscan"
    assert meta2["rocking_step_deg"] == pytest.approx(1.0 / 31)
    assert list_scans(tree["master"]) == ["PtNP_0001_1.1", "PtNP_0001_2.1"]
    assert list_scans(tree["file"]) == ["1.1", "2.1"]
    # scan given as an int, frame selection
    part, _, meta = load_scan(tree["file"], 1, frames=slice(8, 24))
    assert part.shape == (16, 516, 516) and len(meta["rocking_angles_deg"]) == 16


def test_peak_and_crop_on_loaded_scan(tree):
    frames, mask, _ = load_scan(tree["file"], "1.1")
    peak = find_peak(frames, mask)
    com = ndimage.center_of_mass(tree["intensity"].astype(float))  # the pattern's own centre of mass
    assert np.abs(np.subtract(peak, np.add(com, np.subtract(PEAK_AT, 16)))).max() <= 1.5
    cropped, offsets = crop(frames, peak, size=(32, 64, 64), mask=mask)
    nz = 2 * min(peak[0], 32 - peak[0])  # rocking axis: largest symmetric box (even, 7-smooth here)
    assert cropped.shape == (nz, 64, 64)
    assert offsets == (peak[0] - nz // 2, peak[1] - 32, peak[2] - 32)
    assert cropped[nz // 2, 32, 32] == frames[peak]


def test_monitor_normalisation(tree):
    raw, _, _ = load_scan(tree["file"], "1.1")
    norm, _, meta = load_scan(tree["file"], "1.1", monitor="mon2")
    mon = np.linspace(1.0, 2.0, 32)
    assert meta["monitor_normalised"]
    np.testing.assert_allclose(norm[5], raw[5] * mon.mean() / mon[5], rtol=1e-6)
    with pytest.raises(InputError, match="monitor counter 'nope' not found"):
        load_scan(tree["file"], "1.1", monitor="nope")


def test_unknown_scan_and_detector_errors(tree):
    with pytest.raises(InputError, match="unknown scan '7.1'"):
        load_scan(tree["file"], "7.1")
    with pytest.raises(InputError, match="detector 'eiger2M' not found"):
        load_scan(tree["file"], "1.1", detector="eiger2M")
    with pytest.raises(InputError, match="ID01 file not found"):
        load_scan(tree["root"] / "nope.h5", "1.1")


def test_no_detector_and_all_zero_frames(tmp_path):
    path = write_bliss_scan(tmp_path, "S", "0001", np.zeros((4, 516, 516), np.int32), proposal=None)
    with pytest.raises(InputError, match="frames are all zero"):
        load_scan(path, "1.1")
    with h5py.File(path, "a") as f:
        del f["1.1/measurement/mpx1x4"]
        del f["1.1/instrument/mpx1x4"]
    with pytest.raises(InputError, match="no detector found in scan 1.1"):
        load_scan(path, "1.1")


def test_missing_vds_source_and_external_file_are_clear_errors(tree, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tree["root"], root)
    ds = root / "PtNP" / "PtNP_0001" / "PtNP_0001.h5"
    (ds.parent / "scan0001" / "mpx1x4_0000.h5").unlink()
    with h5py.File(ds, "r") as f:  # what h5py does silently: zeros
        assert f["1.1/measurement/mpx1x4"][0].max() == 0
    with pytest.raises(InputError, match=r"virtual dataset source file scan0001/mpx1x4_0000.h5 is missing"):
        load_scan(ds, "1.1")
    (ds.parent / "scan0002" / "mpx1x4_0000.h5").unlink()
    with pytest.raises(InputError, match=r"external link to scan0002/mpx1x4_0000.h5.*missing"):
        load_scan(ds, "2.1")
    ds.unlink()  # the master file's external link now dangles
    with pytest.raises(InputError, match=r"PtNP_0001_1.1 is an external link to PtNP_0001/PtNP_0001.h5.*missing"):
        load_scan(root / "PtNP" / "hc0000_PtNP.h5", "1.1")


def test_eiger_gap_mask_and_invalid_values():
    gaps = detector_gap_mask("eiger2M", (2164, 1030))
    assert gaps[511:552, :].all() and gaps[:, 513:517].all() and not gaps[600, 600]
    assert gaps[:, 770].sum() == 4 + 41 + 5 + 41 + 4 + 41 + 4  # a normal column is masked on the 7 row gaps only
    assert not detector_gap_mask("mpx1x4", (2164, 1030)).any()  # wrong frame shape: no guessed gaps
    frames = np.ones((2, 2164, 1030), np.uint32)
    frames[0, 5, 5] = np.iinfo(np.uint32).max  # Eiger dead pixel marker
    mask, counts = build_mask(frames, "eiger2M", hot_pixels=False)
    assert mask[0, 5, 5] and not mask[1, 5, 5] and counts["invalid_voxels"] == 1


@pytest.mark.skipif(not REAL.is_file(), reason="real ID01 metadata file not in /work/shared/data")
def test_real_id01_file_metadata_and_missing_frames():
    meta = read_metadata(REAL, "20.1")
    assert meta["detector"] == "mpx1x4" and meta["frames_shape"] == [51, 516, 516]
    assert meta["energy_eV"] == pytest.approx(9999.998, abs=1e-3)
    assert meta["distance_m"] == pytest.approx(0.56685, abs=1e-5)
    assert meta["beam_center_x_px"] == pytest.approx(172.91, abs=0.01)
    assert meta["beam_center_y_px"] == pytest.approx(185.60, abs=0.01)
    assert meta["delta_deg"] == pytest.approx(37.046) and meta["nu_deg"] == 0.0 and meta["mu_deg"] == 0.0
    assert meta["phi_deg"] == pytest.approx(44.997, abs=1e-3)
    assert meta["rocking_motor"] == "eta" and meta["rocking_step_deg"] == pytest.approx(0.08, abs=1e-3)
    assert meta["rocking_start_deg"] == pytest.approx(15.242, abs=1e-3) and meta["title"].startswith("ascan eta")
    with pytest.raises(InputError, match=r"scan 20.1 \(mpx1x4\): virtual dataset source file scan0020/mpx1x4_0000.h5"):
        load_scan(REAL, "20")


def test_roi_read_matches_full_read(tree):
    full, full_mask, _ = load_scan(tree["file"], "1.1")
    part, part_mask, meta = load_scan(tree["file"], "1.1", roi_size=(96, 128), frames=slice(4, 28))
    r0, c0 = meta["detector_roi_offset"]
    assert part.shape == (24, 96, 128)
    assert r0 <= PEAK_AT[1] < r0 + 96 and c0 <= PEAK_AT[2] < c0 + 128
    np.testing.assert_array_equal(part, full[4:28, r0:r0 + 96, c0:c0 + 128])
    np.testing.assert_array_equal(part_mask, full_mask[4:28, r0:r0 + 96, c0:c0 + 128])
