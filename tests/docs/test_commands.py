"""The commands in README.md and docs/*.md work: every documented command line parses with its
command's own parser, every option of every CLI has help text, and the headless chain
prepare -> pretrain -> fine-tune -> evaluate runs end to end on tiny data, carrying one
preprocessing from the shards to the fine-tuned model's card."""
from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def entry(name: str):
    """-> main(argv) of a documented command."""
    if name == "napari-vismae":
        from napari_vismae.__main__ import main
        return main
    import importlib
    module = {"pretrain": "training.pretrain.loop", "finetune": "training.finetune.cli"}.get(
        name, f"training.{name}")
    return importlib.import_module(module).main


class _Captured(Exception):
    pass


def parser_of(name: str, sub: list[str]) -> argparse.ArgumentParser:
    """The parser ``name``'s main builds for ``sub`` (captured when it starts parsing)."""
    seen = []
    real = argparse.ArgumentParser.parse_known_args

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise _Captured

    argparse.ArgumentParser.parse_known_args = capture
    try:
        with pytest.raises(_Captured):
            entry(name)(sub + ["--help"])
    finally:
        argparse.ArgumentParser.parse_known_args = real
    return seen[0]


CLIS = {"prepare": [], "pretrain": [], "finetune": [], "evaluate": [], "label_efficiency": [],
        "napari-vismae demo": ["demo"], "napari-vismae headless-demo": ["headless-demo"]}


@pytest.mark.parametrize("cli", CLIS)
def test_every_option_has_help(cli):
    parser = parser_of(cli.split()[0], CLIS[cli])
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]
    if cli == "pretrain":  # options generated from PretrainConfig: each needs a HELP entry
        import dataclasses

        from training.pretrain.config import HELP, PretrainConfig
        missing += [f.name for f in dataclasses.fields(PretrainConfig) if f.name not in HELP]
    assert not missing, f"{cli}: options without help text: {missing}"
    text = parser.format_help()
    assert "%%" not in text and "usage:" in text


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(doc file, command name, argv) of every command in the docs' ```bash blocks."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if not line or line.startswith("#") or "..." in line:
                    continue
                for part in line.split("&&"):
                    words = shlex.split(part)
                    if "-m" in words and words[words.index("-m") + 1].startswith("training."):
                        i = words.index("-m")
                        out.append((doc.name, words[i + 1].split(".", 1)[1], words[i + 2:]))
                    elif "napari-vismae" in words:
                        out.append((doc.name, "napari-vismae",
                                    words[words.index("napari-vismae") + 1:]))
    return out


def test_the_docs_name_the_commands():
    names = {c[1] for c in documented_commands()}
    assert {"prepare", "pretrain", "finetune", "evaluate", "label_efficiency",
            "napari-vismae"} <= names


@pytest.mark.parametrize("doc,name,argv", documented_commands(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40])
def test_documented_command_parses(doc, name, argv):
    sub = argv[:1] if name == "napari-vismae" else []
    if name == "napari-vismae" and (not argv or argv[0].startswith("-")):
        sub, argv = ["demo"], ["demo"] + argv
    parser = parser_of(name, sub)
    try:
        parser.parse_args(argv[len(sub):])
    except SystemExit as e:
        pytest.fail(f"{doc}: `{name} {' '.join(argv)}` does not parse (exit {e.code})")


def test_prepare_pretrain_finetune_evaluate_end_to_end(tmp_path, caplog):
    """The README's headless commands, at tiny sizes, in one process (a few seconds)."""
    from training.data.preprocessing import Preprocessing
    from training.data.synthetic import write_case
    from training.weights.checkpoint import read_model_card

    caplog.set_level("INFO")
    for seed in (1, 2, 3):
        write_case(seed, tmp_path / "data", shape=(6, 64, 64))
    d = tmp_path / "data"
    assert entry("prepare")([str(d / "dicom"), str(tmp_path / "shards"), "--size", "64",
                             "--workers", "1", "--shard-size", "8"]) == 0
    assert entry("pretrain")(["--data", str(tmp_path / "shards"), "--output",
                              str(tmp_path / "mae"), "--model", "tiny", "--input-size", "64",
                              "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
                              "--vis-every", "0", "--device", "cpu"]) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    mae = read_model_card(tmp_path / "mae" / "model")
    assert mae.prep == Preprocessing.from_dict(manifest["preprocessing"])
    assert entry("finetune")(["--task", "segmentation",
                              "--init", str(tmp_path / "mae" / "model"),
                              "--images", str(d / "images"), "--labels", str(d / "labels"),
                              "--modality", "CT", "--class-names", "background", "liver",
                              "spleen", "kidney", "bone", "--epochs", "1", "--batch-size", "4",
                              "--out", str(tmp_path / "seg"), "--device", "cpu"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "training.finetune"]
    assert any(ln.startswith("epoch 1/1") and "val Dice" in ln for ln in lines), lines
    seg = read_model_card(tmp_path / "seg" / "best")
    origin = seg.provenance["preprocessing"]
    assert origin["from"].startswith("parent:") and set(origin["overridden"]) == {"modality"}
    assert seg.prep == Preprocessing.from_dict({**mae.prep.to_dict(), "modality": "CT"})
    assert entry("evaluate")(["--checkpoint", str(tmp_path / "seg" / "best"), "--images",
                              str(d / "images"), "--labels", str(d / "labels"), "--modality",
                              "CT", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 18 and 0 <= metrics["mean_dice"] <= 1
