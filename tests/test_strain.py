"""Tests for physics.strain: geometry against Bragg's law, strain of known displacement fields, lab-frame mapping."""

import numpy as np
import pytest

from physics.errors import InputError
from physics.strain import (Geometry, displacement_and_strain, offset_phase, remove_phase_ramp, to_lab_frame,
                            wavelength_nm, wrapped_gradient)

SHAPE = (40, 48, 48)


def geometry(**kw):
    """An ID01-like geometry: 9 keV, delta 35°, nu 2°, eta rocking 0.01° steps, Maxipix at 1 m."""
    args = dict(energy_eV=9000.0, delta_deg=35.0, nu_deg=2.0, distance_m=1.0, pixel_size_m=(55e-6, 55e-6),
                rocking_motor="eta", rocking_step_deg=0.01, eta_deg=17.5)
    args.update(kw)
    return Geometry(**args)


def sphere_support(shape=SHAPE, radius=12):
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    return sum(g**2 for g in grids) <= radius**2


def lab_positions(geo, shape=SHAPE):
    """Lab position (nm) of every detector-frame voxel, (3, *shape)."""
    basis = geo.real_space_basis(shape)
    v = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij"))
    return np.tensordot(basis, v, axes=([1], [0]))


def test_bragg_law_and_wavelength():
    assert wavelength_nm(12398.419843320026) == pytest.approx(0.1)
    d_pt111 = 0.3924 / np.sqrt(3)  # nm
    two_theta = 2 * np.degrees(np.arcsin(wavelength_nm(9000.0) / (2 * d_pt111)))
    geo = geometry(delta_deg=two_theta, nu_deg=0.0)
    assert np.linalg.norm(geo.q_bragg()) == pytest.approx(2 * np.pi / d_pt111, rel=1e-12)
    # with both detector angles: cos 2θ = cos δ cos ν
    geo = geometry(delta_deg=20.0, nu_deg=25.0)
    tth = np.arccos(np.cos(np.radians(20.0)) * np.cos(np.radians(25.0)))
    assert np.linalg.norm(geo.q_bragg()) == pytest.approx(2 * geo.k * np.sin(tth / 2), rel=1e-12)
    with pytest.raises(InputError, match="photon energy"):
        wavelength_nm(0)


def test_real_space_voxel_along_columns_is_lambda_d_over_np():
    geo = geometry(nu_deg=0.0)
    basis = geo.real_space_basis(SHAPE)
    # at nu = 0 the columns (y) are perpendicular to the rocking and row q-steps (both in the x-z plane)
    expected = wavelength_nm(9000.0) * 1.0 / (SHAPE[2] * 55e-6)
    assert np.allclose(basis[:, 2] / np.linalg.norm(basis[:, 2]), [0, 1, 0])
    assert np.linalg.norm(basis[:, 2]) == pytest.approx(expected, rel=1e-9)
    # the conjugate relation b_m . a_n = 2π δ_mn / N_n
    recip = geo.reciprocal_basis()
    np.testing.assert_allclose(basis.T @ recip, 2 * np.pi * np.diag(1 / np.array(SHAPE)), atol=1e-12)


def test_uniform_strain_from_linear_displacement_no_spikes_at_wraps():
    geo = geometry()
    support = sphere_support()
    g = geo.q_bragg()
    g_hat = g / np.linalg.norm(g)
    eps0 = 1e-3  # phase step up to 1.5 rad per voxel along the rows: sampled, but wrapping every few voxels
    s = np.tensordot(g_hat, lab_positions(geo), axes=([0], [0]))  # nm along G
    phase = np.linalg.norm(g) * eps0 * s  # φ = G·u with u = eps0 (Ĝ·r) Ĝ
    assert np.ptp(phase[support]) > 6 * np.pi  # many 2π wraps inside the crystal
    obj = support * np.exp(1j * phase)
    arrays, meta = displacement_and_strain(obj, support, geo, remove_ramp=False)
    strain = arrays["strain"][support]
    assert np.abs(strain - eps0).max() < 1e-6  # uniform, no spike where the phase wraps
    assert meta["strain_units"].startswith("1") and meta["displacement_units"].startswith("nm")
    u = arrays["displacement"][support]
    np.testing.assert_allclose(u, eps0 * (s[support] - s[support].mean()), atol=1e-4)
    # a uniform strain is a phase ramp: once the ramp is removed only heterogeneous strain is left (here none)
    arrays, meta = displacement_and_strain(obj, support, geo)
    assert np.abs(arrays["strain"][support]).max() < 1e-6


def test_heterogeneous_strain_of_quadratic_displacement():
    geo = geometry()
    support = sphere_support()
    g = geo.q_bragg()
    g_hat = g / np.linalg.norm(g)
    alpha = 2e-6  # 1/nm: strain grows linearly along G (about ±1e-3 at the surface)
    s = np.tensordot(g_hat, lab_positions(geo), axes=([0], [0]))
    phase = np.linalg.norm(g) * alpha * s**2 / 2
    arrays, _ = displacement_and_strain(support * np.exp(1j * phase), support, geo)
    expected = alpha * s  # minus its mean (ramp removal takes out the uniform part)
    got = arrays["strain"][support]
    err = got - (expected[support] - expected[support].mean())
    assert np.abs(err).max() < 0.05 * np.ptp(expected[support])


def test_wrapped_gradient_without_geometry():
    n = 32
    x = np.arange(n)[None, None, :] * np.ones((n, n, 1))
    phase = np.angle(np.exp(1j * 2.5 * x))  # jumps of 2π every ~2.5 voxels
    support = np.ones((n, n, n), bool)
    grads = wrapped_gradient(phase, support)
    assert np.allclose(grads[2], 2.5) and np.allclose(grads[:2], 0)
    arrays, meta = displacement_and_strain(np.exp(1j * phase), support, None, voxel_size_nm=(1, 1, 2.0),
                                           g_axis=2, g_norm=5.0, remove_ramp=False)
    assert np.allclose(arrays["strain"], 2.5 / 2.0 / 5.0)


def test_ramp_and_offset_removal():
    support = sphere_support()
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in SHAPE], indexing="ij")
    phase = np.angle(np.exp(1j * (0.4 * grids[0] - 0.3 * grids[2] + 2.0)))
    flat, ramp = remove_phase_ramp(phase, support)
    np.testing.assert_allclose(ramp, [0.4, 0, -0.3], atol=1e-9)
    flat = offset_phase(flat, support)
    assert np.abs(flat[support]).max() < 1e-9
    with pytest.raises(InputError, match="support is empty"):
        remove_phase_ramp(phase, np.zeros(SHAPE, bool))


def test_to_lab_frame_maps_a_lab_sphere_back_to_a_sphere():
    geo = geometry(nu_deg=5.0)
    basis = geo.real_space_basis(SHAPE)
    pos = lab_positions(geo)
    radius = 0.35 * min(np.linalg.norm(basis[:, i]) * n for i, n in enumerate(SHAPE)) / 2
    det_sphere = np.sum(pos**2, axis=0) <= radius**2  # a lab-space sphere as the detector frame sees it (sheared)
    lab, meta = to_lab_frame(det_sphere.astype(np.float32), basis, shape=(48, 48, 48))
    vox = meta["voxel_size_nm"][0]
    grids = np.meshgrid(*[(np.arange(48) - 24) * vox for _ in range(3)], indexing="ij")
    true = sum(g**2 for g in grids) <= radius**2
    got = lab > 0.5
    iou = (got & true).sum() / (got | true).sum()
    assert iou > 0.85
    # an orthogonal diagonal basis is the identity mapping
    diag = np.diag([2.0, 2.0, 2.0])
    vol = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    same, _ = to_lab_frame(vol, diag, voxel_size_nm=2.0)
    np.testing.assert_allclose(same, vol, atol=1e-5)


def test_geometry_from_metadata_and_missing_fields():
    meta = {"energy_eV": 9000.0, "delta_deg": 35.0, "nu_deg": 0.0, "distance_m": 0.85, "pixel_size_x_m": 55e-6,
            "pixel_size_y_m": 55e-6, "rocking_motor": "eta", "rocking_step_deg": 0.01, "eta_deg": 17.0}
    geo = Geometry.from_metadata(meta, binning=(2, 1, 1))
    assert geo.rocking_step_deg == 0.02 and geo.pixel_size_m == (55e-6, 55e-6)
    with pytest.raises(InputError, match="energy_eV and delta_deg"):
        Geometry.from_metadata({"delta_deg": 3.0})
    with pytest.raises(InputError, match="rocking_step_deg"):
        Geometry(energy_eV=9000.0, delta_deg=30.0).real_space_basis(SHAPE)


def test_q_vectors_match_xrayutilities_for_id01_circles():
    """Known case computed with xrayutilities 1.8.0 (QConversion(['z-','y-','z-'], ['z-','y-'], [1,0,0]),
    init_area('z-','y+', cch 258/258, 55 µm, 0.85 m), Ang2Q.area(mu=0, eta, phi=0, nu, delta, en=9000)):
    q in the sample frame at eta = 18° (1/nm) for delta 36°, nu 4°, and its change per row, column and 0.01° of eta.
    """
    from physics.strain import _rot

    geo = geometry(delta_deg=36.0, nu_deg=4.0, distance_m=0.85, eta_deg=18.0, rocking_step_deg=0.01)
    to_sample = _rot([0, -1, 0], np.radians(18.0)).T  # undo the eta rotation: xrayutilities reports sample-frame q
    xu_g = [-0.08548469, -2.57393872, 28.21604411]
    xu_steps = {"rock": [4.92462999e-03, 0.0, 1.44901377e-05], "row": [0.00090786, -0.000121, -0.00280549],
                "col": [1.95699435e-04, 2.94402428e-03, -6.36456110e-05]}
    np.testing.assert_allclose(to_sample @ geo.q_bragg(), xu_g, atol=1e-6)
    basis = to_sample @ geo.reciprocal_basis()
    for i, name in enumerate(("rock", "row", "col")):
        # linearised steps vs finite pixel differences: agree to ~p/D of the step
        np.testing.assert_allclose(basis[:, i], xu_steps[name], atol=2e-6 if name == "rock" else 2e-7)
