"""`sinsr bench --make-lr`: LR made from HR images. MATLAB bicubic against the published Set5/Set14
LR files and Pillow's kernel, the ResShift ImageNet-Test recipe's parameters, per-name seeding
(same HR folder -> same LR, whatever else is in it), and the CLI's flags and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from sinsr_cli.bench.dataset import LR_RECIPES, make_lr_dataset, recipe_seed
from sinsr_cli.cli.app import app
from sinsr_cli.distill.degradations import (
    DegradationConfig,
    matlab_bicubic_resize,
    shortest_side_center_crop,
)
from sinsr_cli.imageio import SinsrIOError, read_image


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def noise_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def read8(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB"))


# ----------------------------------------------------------------------------- MATLAB bicubic


@pytest.mark.parametrize("name", ["set5", "set14"])
def test_bicubic_recipe_reproduces_the_published_lr(data_dir: Path, tmp_path: Path, name: str) -> None:
    # the shared Set5/Set14 LR files were made by MATLAB imresize (BasicSR generate_bicubic_img.m)
    src = data_dir / name
    ds = make_lr_dataset(src / "hr", tmp_path / "made", "bicubic")
    assert ds.paired and ds.lr_recipe == "bicubic"
    assert [i.name for i in ds.items] == sorted(p.stem for p in (src / "lr").iterdir())
    differ, total = 0, 0
    for item in ds.items:
        ours, ref = read8(item.lr).astype(int), read8(src / "lr" / f"{item.name}.png").astype(int)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1  # MATLAB rounds its double result; we round float32
        differ, total = differ + int((ours != ref).sum()), total + ours.size
        assert np.array_equal(read8(item.hr), read8(src / "hr" / f"{item.name}.png"))  # mod-12 is mod-4
    assert differ / total < 1e-4


def test_matlab_bicubic_is_the_identity_at_scale_1_and_keeps_constants() -> None:
    x = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(matlab_bicubic_resize(x, (9, 13)), x, atol=1e-6, rtol=0)
    flat = torch.full((1, 3, 17, 23), 0.3)
    for size in [(4, 5), (34, 46), (5, 40)]:
        torch.testing.assert_close(matlab_bicubic_resize(flat, size), torch.full((1, 3, *size), 0.3))
    assert matlab_bicubic_resize(x.double(), (3, 4)).dtype == torch.float64


def test_matlab_bicubic_interior_equals_pillows_antialiased_bicubic() -> None:
    # Pillow's BICUBIC (a = -0.5, kernel stretched by the shrink factor) differs only at the edges,
    # where it renormalises truncated taps and MATLAB mirrors the image
    a = np.random.default_rng(1).random((48, 64)).astype(np.float32)
    pil = np.asarray(Image.fromarray(a, mode="F").resize((16, 12), Image.Resampling.BICUBIC))
    ours = matlab_bicubic_resize(torch.from_numpy(a).double(), (12, 16)).numpy()
    # output pixel i's taps reach input (i + 0.5) * 4 - 0.5 +- 8: inside for 2 <= i <= n - 3
    np.testing.assert_allclose(ours[2:-2, 2:-2], pil[2:-2, 2:-2], atol=1e-5)
    assert np.abs(ours[0] - pil[0]).max() > 1e-4  # the borders do differ


# ----------------------------------------------------------------------------- ImageNet-Test recipe


def test_imagenet_test_recipe_is_resshifts_testing_config() -> None:
    cfg = DegradationConfig.imagenet_test()
    b = cfg.stage1.blur
    assert (cfg.scale, cfg.gt_size) == (4, 256)
    assert b.pad_to == 13 and b.kernel_sizes == (3, 5, 7, 9, 11)
    assert dict(zip(b.kernel_types, b.kernel_probs)) == {
        "iso": 0.6, "aniso": 0.4, "generalized_iso": 0, "generalized_aniso": 0, "plateau_iso": 0, "plateau_aniso": 0,
    }
    assert b.sigma_range == (0.2, 0.8) and b.sinc_prob == 0.1
    s = cfg.stage1
    assert s.noise_range == (1, 15) and s.poisson_scale_range == (0.05, 0.3) and s.jpeg_range == (70, 95)
    assert s.resize_range == (0.5, 1.5) and s.blur_prob == 1.0
    assert cfg.second_order_prob == 0.0  # first order only
    assert cfg.final_sinc_prob == 0.2 and cfg.final_sinc_sizes == (3, 5) and cfg.stage2.jpeg_range == (80, 100)


def test_shortest_side_center_crop() -> None:
    x = torch.rand(1, 3, 300, 400, generator=torch.Generator().manual_seed(0))
    out = shortest_side_center_crop(x, 256)
    assert out.shape == (1, 3, 256, 256)
    ref = F.interpolate(x, size=(256, 341), mode="bilinear", align_corners=False)[..., :, 42:298]
    torch.testing.assert_close(out, ref)
    assert shortest_side_center_crop(x[..., :100, :120], 256).shape == (1, 3, 256, 256)  # small: upscaled
    square = x[..., :256, 50:306]
    assert torch.equal(shortest_side_center_crop(square, 256), square)


def test_imagenet_test_lr_depends_only_on_the_file_and_its_name(tmp_path: Path) -> None:
    img = noise_image(200, 300, 0)
    save(tmp_path / "alone" / "cat.png", img)
    save(tmp_path / "crowd" / "cat.png", img)
    save(tmp_path / "crowd" / "aardvark.png", noise_image(64, 64, 1))  # sorts first: shifts positions
    save(tmp_path / "crowd" / "dog.png", img)  # same pixels, other name
    a = make_lr_dataset(tmp_path / "alone", tmp_path / "a", "imagenet-test")
    b = make_lr_dataset(tmp_path / "crowd", tmp_path / "b", "imagenet-test")
    again = make_lr_dataset(tmp_path / "alone", tmp_path / "again", "imagenet-test")
    (cat_a,) = a.items
    by_name = {i.name: i for i in b.items}
    assert read8(cat_a.hr).shape == (256, 256, 3) and read8(cat_a.lr).shape == (64, 64, 3)
    assert np.array_equal(read8(cat_a.lr), read8(by_name["cat"].lr))
    assert np.array_equal(read8(cat_a.lr), read8(again.items[0].lr))
    assert not np.array_equal(read8(cat_a.lr), read8(by_name["dog"].lr))
    assert np.array_equal(read8(by_name["cat"].hr), read8(by_name["dog"].hr))  # the HR crop is not random
    assert recipe_seed("cat", "imagenet-test") != recipe_seed("dog", "imagenet-test")
    assert set(LR_RECIPES) == {"imagenet-test", "bicubic"}


def test_make_lr_never_overwrites_and_names_problems(tmp_path: Path) -> None:
    save(tmp_path / "hr" / "a.png", noise_image(32, 32, 0))
    make_lr_dataset(tmp_path / "hr", tmp_path / "out", "bicubic")
    before = (tmp_path / "out" / "lr" / "a.png").read_bytes()
    with pytest.raises(SinsrIOError, match="not empty"):
        make_lr_dataset(tmp_path / "hr", tmp_path / "out", "imagenet-test")
    assert (tmp_path / "out" / "lr" / "a.png").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SinsrIOError, match="not empty"):  # any content, not only lr/ and hr/
        make_lr_dataset(tmp_path / "hr", tmp_path / "other", "bicubic")
    for inside in (tmp_path / "hr", tmp_path / "hr" / "pairs"):
        with pytest.raises(SinsrIOError, match="is inside the HR images"):
            make_lr_dataset(tmp_path / "hr", inside, "bicubic")
    assert sorted(p.name for p in (tmp_path / "hr").iterdir()) == ["a.png"]
    save(tmp_path / "hr" / "a.jpg", noise_image(32, 32, 1))
    with pytest.raises(SinsrIOError, match="share the name 'a'"):
        make_lr_dataset(tmp_path / "hr", tmp_path / "out2", "bicubic")
    with pytest.raises(ValueError, match="unknown LR recipe"):
        make_lr_dataset(tmp_path / "hr", tmp_path / "out3", "bsrgan")
    save(tmp_path / "tiny" / "t.png", noise_image(3, 8, 0))
    with pytest.raises(SinsrIOError, match="at least 4 px"):
        make_lr_dataset(tmp_path / "tiny", tmp_path / "out4", "bicubic")


def test_make_lr_stopped_half_way_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """Ctrl-C (or a bad image) half-way through: the pairs made so far are taken back, so the
    same command can run again (before, the rerun was refused: "not empty")."""
    for k in range(3):
        save(tmp_path / "hr" / f"{k}.png", noise_image(32, 32, k))

    def stop_after_first(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            (out / "lr").mkdir(parents=True)
        with pytest.raises(KeyboardInterrupt):
            make_lr_dataset(tmp_path / "hr", out, "bicubic", on_made=stop_after_first)
        assert not out.exists() if out.name == "new" else sorted(p.name for p in out.rglob("*")) == ["lr"]
        assert len(make_lr_dataset(tmp_path / "hr", out, "bicubic").items) == 3  # the rerun works


def test_bicubic_recipe_keeps_16_bit_hr(tmp_path: Path) -> None:
    a = (np.random.default_rng(0).random((18, 22)) * 65535).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    ds = make_lr_dataset(tmp_path / "g.png", tmp_path / "out", "bicubic")
    hr = read_image(ds.items[0].hr)
    assert hr.bit_depth == 16 and hr.rgb.shape == (16, 20, 3)
    assert read_image(ds.items[0].lr).rgb.shape == (4, 5, 3)


# ----------------------------------------------------------------------------- CLI


def invoke(*args: object) -> object:
    return CliRunner().invoke(app, ["bench", *map(str, args), "--quiet", "--model", "none", "--learned", "none"])


def test_cli_make_lr_benchmarks_the_made_pairs(tmp_path: Path) -> None:
    for k in range(2):
        save(tmp_path / "hr" / f"im{k}.png", noise_image(40, 44, k))
    r = invoke(tmp_path / "hr", "--make-lr", "bicubic", "--pairs-dir", tmp_path / "p", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["dataset"]["mode"] == "paired" and doc["dataset"]["lr_recipe"] == "bicubic"
    assert "MATLAB" in doc["dataset"]["lr_recipe_description"]
    assert sorted(p.name for p in (tmp_path / "p" / "lr").iterdir()) == ["im0.png", "im1.png"]
    assert doc["runs"][0]["images"][0]["lr_size"] == [11, 10]

    # without --pairs-dir the pairs live in a temporary folder, removed afterwards
    r = invoke(tmp_path / "hr", "--make-lr", "imagenet-test", "--json", tmp_path / "t.json", "--limit", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["dataset"]["images"] == 1 and doc["dataset"]["images_found"] == 2
    assert doc["runs"][0]["images"][0]["lr_size"] == [64, 64]
    assert not Path(doc["dataset"]["lr_dir"]).exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--make-lr", "bicubic", "--hr", "{d}"], "do not give --hr"),
        (["--pairs-dir", "{d}/p"], "--pairs-dir only applies with --make-lr"),
        (["--make-lr", "jpeg"], "unknown LR recipe"),
        (["--make-lr", "bicubic", "--pairs-dir", "{d}"], "not empty"),
    ],
)
def test_cli_make_lr_errors_are_one_line(tmp_path: Path, extra: list[str], needle: str) -> None:
    save(tmp_path / "hr" / "a.png", noise_image(32, 32, 0))
    save(tmp_path / "full" / "hr" / "x.png", noise_image(8, 8, 0))
    r = invoke(tmp_path / "hr", *[e.format(d=tmp_path / "full") for e in extra])
    assert r.exit_code == 2, r.output  # type: ignore[attr-defined]
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]  # type: ignore[attr-defined]
    assert len(lines) == 1 and needle in lines[0], r.output  # type: ignore[attr-defined]
