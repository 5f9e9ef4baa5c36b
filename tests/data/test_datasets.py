import numpy as np
import pytest
import torch

from training.data.datasets import (
    ArrayDataset,
    CSVDataset,
    DataError,
    VolumeFolderDataset,
    fold_csv_paths,
    parse_label,
)
from training.data.preprocessing import scale_to_unit


def test_array_dataset_uses_shared_preprocessing(prep64):
    img = np.full((80, 80), 40.0, np.float32)  # window centre -> 0.5
    mask = np.zeros((80, 80), np.uint8)
    mask[:40] = 1
    ds = ArrayDataset([img], [mask], prep=prep64)
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and y.shape == (64, 64) and y.dtype == torch.int64
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-5)
    assert y[:32].eq(1).all() and y[32:].eq(0).all()
    unit = scale_to_unit(img, prep64, "CT")
    assert np.allclose(unit, 0.5)


def test_volume_in_memory_is_sliced(prep64):
    vol = np.random.default_rng(0).normal(size=(5, 32, 32)).astype(np.float32)
    lab = np.zeros((5, 32, 32), np.int64)
    ds = ArrayDataset([vol], [lab], prep=prep64, names=["v"])
    assert len(ds) == 5 and ds.groups() == ["v"] * 5


def test_mask_shape_mismatch_is_an_error(prep64):
    with pytest.raises(DataError, match="does not match"):
        ArrayDataset([np.zeros((32, 32))], [np.zeros((32, 30))], prep=prep64)
    with pytest.raises(DataError, match="does not match"):
        ArrayDataset([np.zeros((3, 32, 32))], [np.zeros((2, 32, 32))], prep=prep64)


def test_labels_beyond_classes_and_empty_sets(prep64):
    ds = ArrayDataset([np.zeros((8, 8))], [np.full((8, 8), 7)], prep=prep64)
    with pytest.raises(DataError, match="outside 0..4"):
        ds.validate(5)
    with pytest.raises(DataError, match="empty"):
        ArrayDataset([], [], prep=prep64).validate(5)
    with pytest.raises(DataError, match="non-integer"):
        ArrayDataset([np.zeros((4, 4))], [np.full((4, 4), 0.5)], prep=prep64)


def test_one_class_warnings(prep64):
    img = np.arange(16.0).reshape(4, 4)  # images with contrast (constant ones are refused)
    ds = ArrayDataset([img] * 3, [1, 1, 1], task="classification", prep=prep64)
    with pytest.warns(UserWarning, match="AUC"):
        ds.validate(2)
    seg = ArrayDataset([img], [np.zeros((4, 4))], prep=prep64)
    with pytest.warns(UserWarning, match="foreground"):
        seg.validate(2)


def test_csv_segmentation_and_classification(tmp_path, prep64):
    from skimage.io import imsave
    rng = np.random.default_rng(0)
    rows_seg, rows_cls = ["image,mask"], ["image,label"]
    for i in range(3):
        img = (rng.random((40, 40)) * 255).astype(np.uint8)
        m = np.zeros((40, 40), np.uint8)
        m[10:20, 10:20] = 1
        imsave(tmp_path / f"i{i}.png", img, check_contrast=False)
        np.save(tmp_path / f"m{i}.npy", m)
        rows_seg.append(f"i{i}.png,m{i}.npy")
        rows_cls.append(f"i{i}.png,{['negative', 'positive', '2'][i]}")
    (tmp_path / "train_fold1.csv").write_text("\n".join(rows_seg) + "\n")
    (tmp_path / "cls.csv").write_text("\n".join(rows_cls) + "\n")
    paths = fold_csv_paths(tmp_path, 1)
    ds = CSVDataset(paths["train"], "segmentation", prep64)
    x, y = ds[1]
    assert ds.task == "segmentation" and x.shape == (1, 64, 64) and y.max() == 1
    cls = CSVDataset(tmp_path / "cls.csv", prep=prep64)
    assert cls.task == "classification" and cls.labels().tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="outside"):
        cls.validate(2)
    with pytest.raises(DataError, match="mask"):
        CSVDataset(tmp_path / "cls.csv", "segmentation", prep64)


def test_csv_missing_file_and_bad_label(tmp_path, prep64):
    (tmp_path / "a.csv").write_text("image,mask\nnope.png,nope.npy\n")
    with pytest.raises(DataError, match="not found"):
        CSVDataset(tmp_path / "a.csv", prep=prep64)[0]
    with pytest.raises(DataError, match="cannot interpret"):
        parse_label("maybe", ["cat", "dog"])
    assert parse_label("Dog", ["cat", "dog"]) == 1


def test_volume_folder_nifti(tmp_path, prep64):
    from training.data.synthetic import write_case
    for s in (1, 2):
        write_case(s, tmp_path, shape=(4, 48, 48), dicom=False)
    ds = VolumeFolderDataset(tmp_path / "images", tmp_path / "labels", prep=prep64,
                             modality="CT")
    assert len(ds) == 8 and set(ds.groups()) == {"case0001", "case0002"}
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and y.max() <= 4
    ds.validate(5)
    (tmp_path / "labels" / "case0002.nii.gz").unlink()
    with pytest.raises(DataError, match="no label volume"):
        VolumeFolderDataset(tmp_path / "images", tmp_path / "labels", prep=prep64)


def test_volume_folder_shape_mismatch(tmp_path, prep64):
    from training.data.synthetic import write_nifti
    write_nifti(np.zeros((3, 16, 16), np.float32), tmp_path / "img" / "a.nii.gz")
    write_nifti(np.zeros((3, 16, 12), np.uint8), tmp_path / "lab" / "a.nii.gz")
    with pytest.raises(DataError, match="does not match"):
        VolumeFolderDataset(tmp_path / "img", tmp_path / "lab", prep=prep64)


def test_dicom_series_folder_needs_reader(tmp_path, prep64):
    from training.data.synthetic import write_case
    write_case(3, tmp_path, shape=(3, 32, 32), nifti=False)
    try:
        import training.io  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="training.io"):
            VolumeFolderDataset(tmp_path / "dicom", tmp_path / "labels", prep=prep64)
    else:
        ds = VolumeFolderDataset(tmp_path / "dicom", tmp_path / "labels", prep=prep64)
        assert len(ds) == 3


# -- issue 13: bad data refused before training, the file named, no raw tracebacks ------------
def _volumes(root, n=2, img=None, lab=None, seed=0):
    import nibabel as nib
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "lab").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        a = rng.normal(0, 100, (32, 32, 4)).astype(np.float32) if img is None else img
        m = (rng.random((32, 32, 4)) > .7).astype(np.uint8) if lab is None else lab
        nib.save(nib.Nifti1Image(a, np.eye(4)), root / "img" / f"c{k}.nii.gz")
        nib.save(nib.Nifti1Image(m, np.eye(4)), root / "lab" / f"c{k}.nii.gz")
    return root / "img", root / "lab"


def _finetune_cli(capsys, *args):
    from training.finetune.cli import main
    code = main(["--task", "segmentation", "--preset", "tiny", "--input-size", "64",
                 "--epochs", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def _bad_inputs(tmp_path):
    """The five inputs that gave the fine-tune CLI raw tracebacks."""
    from skimage.io import imsave

    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint
    cases = {}
    img, lab = _volumes(tmp_path / "trunc")
    p = img / "c0.nii.gz"
    p.write_bytes(p.read_bytes()[:300])
    cases["truncated .nii.gz"] = (["--images", str(img), "--labels", str(lab)], p)
    img, lab = _volumes(tmp_path / "garbage")
    (lab / "c1.nii.gz").write_bytes(b"garbage" * 50)
    cases["garbage label file"] = (["--images", str(img), "--labels", str(lab)],
                                   lab / "c1.nii.gz")
    img, lab = _volumes(tmp_path / "dicom")
    (img / "c1.nii.gz").unlink()
    (img / "c1").mkdir()
    (img / "c1" / "x.dcm").write_bytes(b"not dicom" * 30)
    cases["unreadable DICOM folder"] = (["--images", str(img), "--labels", str(lab)], img / "c1")
    init = save_checkpoint(build_model("mae", "tiny", img_size=64), tmp_path / "init")
    (init / "model_card.json").write_text("null")
    img, lab = _volumes(tmp_path / "ok")
    cases["corrupt --init card"] = (["--images", str(img), "--labels", str(lab), "--init",
                                     str(init), "--num-classes", "2"], init / "model_card.json")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    rng = np.random.default_rng(1)
    for n in ("a", "b"):
        imsave(csv_dir / f"{n}.png", (rng.random((32, 32)) * 255).astype(np.uint8))
        (csv_dir / f"{n}_mask.png").write_bytes(b"")
    (csv_dir / "train.csv").write_text("image,mask\na.png,a_mask.png\nb.png,b_mask.png\n")
    cases["0-byte mask PNG"] = (["--train-csv", str(csv_dir / "train.csv")], csv_dir)
    return cases


def test_finetune_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    """Before: truncated .nii.gz, a garbage label file, an unreadable DICOM folder, a corrupt
    --init card and a 0-byte mask PNG each ended the CLI with a raw traceback."""
    for case, (args, named) in _bad_inputs(tmp_path).items():
        if "--num-classes" not in args:
            args = [*args, "--num-classes", "2"]
        code, line = _finetune_cli(capsys, *args, "--out", str(tmp_path / "out" / case))
        assert code == 2, case
        assert line.startswith("error: ") and str(named) in line, (case, line)


def test_unwritable_output_is_refused_before_training(tmp_path, capsys):
    """Before: with an unwritable output a fine-tune ran to the end, then failed to save."""
    img, lab = _volumes(tmp_path / "v")
    (tmp_path / "a-file").write_text("x")
    code, line = _finetune_cli(capsys, "--images", str(img), "--labels", str(lab),
                               "--num-classes", "2", "--out", str(tmp_path / "a-file" / "run"))
    assert code == 2 and "not writable" in line and "a-file" in line


@pytest.mark.parametrize("kind", ["nan", "constant"])
def test_all_nan_or_constant_images_are_refused(tmp_path, kind):
    """Before: all-NaN images fine-tuned and became the active version."""
    bad = np.full((32, 32, 4), np.nan if kind == "nan" else 7.0, np.float32)
    img, lab = _volumes(tmp_path / "v", n=1, img=bad)
    with pytest.raises(DataError, match="NaN|no contrast") as info:
        VolumeFolderDataset(img, lab).validate(2, "training set")
    assert "c0" in str(info.value)
    ds = ArrayDataset([np.full((3, 16, 16), 5.0, np.float32)], [np.zeros((3, 16, 16), np.uint8)])
    with pytest.raises(DataError, match="no contrast"):
        ds.validate(2)
    with pytest.raises(DataError, match="every pixel is NaN"):
        ArrayDataset([np.full((16, 16), np.nan, np.float32)], [np.zeros((16, 16), np.uint8)])


def test_float_labels_are_neither_truncated_nor_accepted_out_of_range(tmp_path):
    """Before: float labels were truncated (2.0 -> 1); 1.5 as a class became 1."""
    lab = np.zeros((32, 32, 4), np.float32)
    lab[8:16, 8:16] = 2.0
    img, labdir = _volumes(tmp_path / "v", n=1, lab=lab)
    ds = VolumeFolderDataset(img, labdir)
    assert 2 in np.unique(np.concatenate([ds.load(i).target.ravel() for i in range(len(ds))]))
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        ds.validate(2, "training set")
    lab[8:16, 8:16] = 1.5
    img, labdir = _volumes(tmp_path / "w", n=1, lab=lab)
    with pytest.raises(DataError, match="non-integer"):
        VolumeFolderDataset(img, labdir)
    with pytest.raises(DataError, match="not an integer class"):
        ArrayDataset([np.ones((8, 8)), np.zeros((8, 8))], [1.5, 0], task="classification")
    with pytest.raises(DataError, match="not an integer"):
        parse_label("inf", where="x.csv line 2")
    assert ArrayDataset([np.eye(8)], [np.float32(2.0)], task="classification").label(0) == 2
