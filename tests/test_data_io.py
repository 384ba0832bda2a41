"""Imports, exports and the validated database reader: units, round trips, bad input."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import kcal, kJ, mol
from typer.testing import CliRunner

from stablemd.cli.data import app
from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, summarize, write_frames
from stablemd.data.formats import export_extxyz, import_file

N_FRAMES, N_ATOMS = 10, 9


def md17_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "R": rng.normal(scale=2.0, size=(N_FRAMES, N_ATOMS, 3)),
        "E": rng.normal(-97000.0, 3.0, size=(N_FRAMES, 1)),
        "F": rng.normal(scale=20.0, size=(N_FRAMES, N_ATOMS, 3)),
        "z": np.array([6, 6, 8, 1, 1, 1, 1, 1, 1], dtype=np.uint8),
    }


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_to_db_to_extxyz_keeps_labels_and_converts_kcal_per_mol(tmp_path):
    arrays = md17_arrays()
    db = tmp_path / "md17.db"
    assert import_file(write_npz(tmp_path / "md17.npz", **arrays), db) == N_FRAMES
    assert summarize(db)["frames"] == N_FRAMES
    assert export_extxyz(db, tmp_path / "md17.extxyz") == N_FRAMES
    # extxyz stores arrays with 8 decimals
    extxyz = ase.io.read(tmp_path / "md17.extxyz", index=":")
    for frames, atol in ((read_frames(db), 0.0), (extxyz, 1e-8)):
        energies = [a.get_potential_energy() for a in frames]
        np.testing.assert_allclose(energies, arrays["E"][:, 0] * kcal / mol, rtol=1e-12)
        forces = np.stack([a.get_forces() for a in frames])
        np.testing.assert_allclose(forces, arrays["F"] * kcal / mol, rtol=1e-12, atol=atol)
        positions = np.stack([a.positions for a in frames])
        np.testing.assert_allclose(positions, arrays["R"], rtol=1e-12, atol=atol)
    assert read_frames(db, [3])[0].info["source_index"] == 3


def test_npz_units_from_metadata_option_and_revised_md17_names(tmp_path):
    arrays = md17_arrays()
    with_units = write_npz(tmp_path / "a.npz", **arrays, e_unit="eV", r_unit="Ang")
    import_file(with_units, tmp_path / "a.db")
    assert read_frames(tmp_path / "a.db")[0].get_potential_energy() == arrays["E"][0, 0]
    with pytest.raises(InputError, match="the file says e_unit 'eV' but 'kJ/mol' was given"):
        import_file(with_units, tmp_path / "b.db", energy_unit="kJ/mol")
    revised = {"coords": arrays["R"], "energies": arrays["E"][:, 0], "forces": arrays["F"]}
    path = write_npz(tmp_path / "rmd17.npz", nuclear_charges=arrays["z"], **revised)
    import_file(path, tmp_path / "c.db", energy_unit="kJ/mol")
    energy = read_frames(tmp_path / "c.db")[0].get_potential_energy()
    assert energy == pytest.approx(arrays["E"][0, 0] * kJ / mol)


def replace(arrays, **changes):
    return {k: v for k, v in (arrays | changes).items() if v is not None}


def nan_in_frame_3(forces):
    forces = forces.copy()
    forces[3, 2, 1] = np.nan
    return forces


BAD_NPZ = [
    (lambda a: replace(a, F=None), "missing key 'F'"),
    (lambda a: replace(a, F=a["F"][:, :5]), r"F has shape \(10, 5, 3\) but R has \(10, 9, 3\)"),
    (lambda a: replace(a, E=a["E"][:4]), r"E has shape \(4, 1\)"),
    (lambda a: replace(a, z=a["z"][:3]), r"z has shape \(3,\)"),
    (lambda a: replace(a, z=np.array([6, 6, 8, 1, 1, 1, 1, 1, 0])), r"z\[8\] = 0 is not an"),
    (lambda a: replace(a, F=nan_in_frame_3(a["F"])), "frame 3 has non-finite forces"),
    (lambda a: replace(a, e_unit="furlongs"), "unknown energy unit 'furlongs'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_NPZ)
def test_bad_npz_files_are_input_errors(tmp_path, change, message):
    path = write_npz(tmp_path / "bad.npz", **change(md17_arrays()))
    with pytest.raises(InputError, match=message):
        import_file(path, tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()


def test_unreadable_files_are_input_errors(tmp_path):
    good = write_npz(tmp_path / "good.npz", **md17_arrays())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    text = tmp_path / "text.npz"
    text.write_text("not a zip\n")
    fake_db = tmp_path / "fake.db"
    fake_db.write_text("hello\n")
    cases = [
        (truncated, "not a readable npz"),
        (text, "not a readable npz"),
        (tmp_path / "missing.npz", "no such file"),
        (fake_db, "not an ASE database"),
        (tmp_path / "frames.pdb", "unknown file type '.pdb'"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message):
            import_file(path, tmp_path / "out.db")
    with pytest.raises(InputError, match="no such database"):
        read_frames(tmp_path / "missing.db")
    assert fake_db.read_text() == "hello\n"  # a foreign file is never modified


def labelled(energy=-1.0, forces=None, n=3, **info):
    atoms = Atoms("H" * n, positions=np.arange(3 * n).reshape(n, 3) * 1.0)
    forces = np.zeros((n, 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    atoms.info.update(info)
    return atoms


def test_database_validation_names_the_row(tmp_path):
    path = tmp_path / "rows.db"
    db = ase.db.connect(path)
    db.write(labelled())
    db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]))
    with pytest.raises(InputError, match="row id 2 has no energy"):
        read_frames(path)
    for atoms, message in [
        (labelled(forces=np.zeros((2, 3))), r"row id 1: forces have shape \(2, 3\)"),
        (labelled(energy=np.inf), "row id 1 has non-finite energy"),
    ]:
        path = tmp_path / f"{len(message)}.db"
        ase.db.connect(path).write(atoms)
        with pytest.raises(InputError, match=message):
            read_frames(path)
    empty = tmp_path / "empty.db"
    ase.db.connect(empty).count()
    with pytest.raises(InputError, match="has no frames"):
        read_frames(empty)
    write_frames(tmp_path / "two.db", [labelled(system="x"), labelled(system="y")])
    assert [a.info["system"] for a in read_frames(tmp_path / "two.db", [1, 0])] == ["y", "x"]
    with pytest.raises(InputError, match="frame index 5 out of range"):
        read_frames(tmp_path / "two.db", [5])
    with pytest.raises(InputError, match="already exists"):
        write_frames(tmp_path / "two.db", [labelled()])


def test_extxyz_import_needs_energy_and_forces(tmp_path):
    good = [labelled(energy=-float(i), trajectory=i) for i in range(3)]
    ase.io.write(tmp_path / "good.xyz", good, format="extxyz")
    assert import_file(tmp_path / "good.xyz", tmp_path / "good.db") == 3
    frames = read_frames(tmp_path / "good.db")
    assert [a.info["trajectory"] for a in frames] == [0, 1, 2]
    ase.io.write(tmp_path / "bare.xyz", Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]]))
    with pytest.raises(InputError, match="frame 0 has no energy"):
        import_file(tmp_path / "bare.xyz", tmp_path / "bare.db")
    (tmp_path / "junk.xyz").write_text("3\ncomment\nXx 0 0 0\n")
    with pytest.raises(InputError, match="not a readable extended XYZ"):
        import_file(tmp_path / "junk.xyz", tmp_path / "junk.db")


def test_cli_import_info_export(tmp_path):
    runner = CliRunner()
    npz = write_npz(tmp_path / "md17.npz", **md17_arrays())
    result = runner.invoke(app, ["import", str(npz), "--out", str(tmp_path / "d.db")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", str(tmp_path / "d.db")])
    assert result.exit_code == 0 and "H, C, O" in result.output
    result = runner.invoke(
        app, ["export", str(tmp_path / "d.db"), "--out", str(tmp_path / "d.xyz")]
    )
    assert result.exit_code == 0 and len(ase.io.read(tmp_path / "d.xyz", ":")) == N_FRAMES
    result = runner.invoke(app, ["import", str(npz), "--out", str(tmp_path / "d.db")])
    assert isinstance(result.exception, InputError)


def test_import_records_a_level_of_theory_and_refuses_a_frame_of_another(tmp_path):
    npz = write_npz(tmp_path / "md17.npz", **md17_arrays())
    runner = CliRunner()
    argv = ["import", str(npz), "--out", str(tmp_path / "a.db"), "--level-of-theory", "PBE"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert {a.info["level_of_theory"] for a in read_frames(tmp_path / "a.db")} == {"PBE"}
    # a frame that names its level keeps it only when it is the one given
    with pytest.raises(InputError, match=r"a.db: frame 0 records the level of theory 'PBE', not"):
        import_file(tmp_path / "a.db", tmp_path / "b.db", level="GFN2-xTB")
    assert import_file(tmp_path / "a.db", tmp_path / "b.db", level="PBE") == N_FRAMES
