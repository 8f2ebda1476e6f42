"""gettext extraction on .mo catalogs written here, the corpus layout, its split and its errors."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from featprune_ext import cli
from featprune_ext.cli import data as data_cli
from featprune_ext.data import gettext as gettext_corpus
from featprune_ext.data.gettext import build_gettext_corpus, extract_pairs, keep_pair, read_catalog, split_of


def write_mo(path: Path, messages: dict, plural: bool = False) -> Path:
    """A GNU .mo catalog (little-endian, no hash table). Keys may be 'ctx\\x04id' or (id, id_plural)."""
    header = "Content-Type: text/plain; charset=UTF-8\n"
    if plural:
        header += "Plural-Forms: nplurals=2; plural=(n != 1);\n"
    entries = {b"": header.encode()}
    for key, value in messages.items():
        k = "\x00".join(key) if isinstance(key, tuple) else key
        v = "\x00".join(value) if isinstance(value, tuple) else value
        entries[k.encode()] = v.encode()
    keys = sorted(entries)
    n = len(keys)
    orig_at, trans_at = 28, 28 + 8 * n
    data_at = trans_at + 8 * n
    blob, orig, trans = b"", [], []
    for table, items in ((orig, keys), (trans, [entries[k] for k in keys])):
        for s in items:
            table.append((len(s), data_at + len(blob)))
            blob += s + b"\x00"
    out = struct.pack("<7I", 0x950412DE, 0, n, orig_at, trans_at, 0, data_at)
    out += b"".join(struct.pack("<2I", *e) for e in orig) + b"".join(struct.pack("<2I", *e) for e in trans) + blob
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


EN = ["Save the current document to disk.", "Could not open the selected file.",
      "The connection to the server was lost.", "Do you really want to delete this item?",
      "Please enter a valid email address.", "The operation completed without errors.",
      "Your changes have not been saved yet!", "This option requires a restart of the program."]
FR = ["Enregistrer le document actuel sur le disque.", "Impossible d'ouvrir le fichier sélectionné.",
      "La connexion au serveur a été perdue.", "Voulez-vous vraiment supprimer cet élément ?",
      "Veuillez saisir une adresse électronique valide.", "L'opération s'est terminée sans erreur.",
      "Vos modifications n'ont pas encore été enregistrées !", "Cette option nécessite un redémarrage du programme."]
DE = ["Das aktuelle Dokument auf der Festplatte speichern.", "Die ausgewählte Datei konnte nicht geöffnet werden.",
      "Die Verbindung zum Server wurde unterbrochen.", "Möchten Sie dieses Element wirklich löschen?",
      "Bitte geben Sie eine gültige E-Mail-Adresse ein.", "Der Vorgang wurde ohne Fehler abgeschlossen.",
      "Ihre Änderungen wurden noch nicht gespeichert!", "Diese Option erfordert einen Neustart des Programms."]


@pytest.fixture
def locale_root(tmp_path: Path) -> Path:
    root = tmp_path / "locale"
    fr = dict(zip(EN[:6], FR[:6]))
    fr.update({"Too short.": "Trop court.",                            # < 5 words
               "lowercase start is not a sentence.": "non.",          # lower-case start
               "No final punctuation in this one": "Pas de point",    # no . ! ?
               "Copied %s files to the folder.": "%s fichiers copiés.",  # placeholder
               "Open the _File menu now.": "Ouvrir le menu _Fichier.",   # mnemonic
               "Left untranslated in this catalog.": "Left untranslated in this catalog.",
               "menu\x04Close all open windows now.": "Fermer toutes les fenêtres ouvertes.",  # context
               ("One file was deleted from disk.", "Many files were deleted from disk."): ("Un.", "Plusieurs.")})
    write_mo(root / "fr/LC_MESSAGES/app.mo", fr, plural=True)
    # A second domain: a duplicate English msgid (first catalog wins) and a duplicate translation.
    write_mo(root / "fr/LC_MESSAGES/zz-other.mo", {EN[0]: "Autre traduction du document.", EN[6]: FR[6],
                                                   "Another English sentence for the same thing.": FR[1],
                                                   EN[7]: FR[7]})
    write_mo(root / "de/LC_MESSAGES/app.mo", dict(zip(EN, DE)))
    write_mo(root / "zh_Hans/LC_MESSAGES/app.mo", {EN[0]: "将当前文档保存到磁盘。"})  # alias dir of zh_CN
    write_mo(root / "pt/LC_MESSAGES/app.mo", {EN[0]: "Guardar o documento atual no disco."})
    write_mo(root / "pt_BR/LC_MESSAGES/app.mo", {EN[0]: "Salvar o documento atual no disco."})
    (root / "sw/LC_MESSAGES").mkdir(parents=True)
    write_mo(root / "sw/LC_MESSAGES/app.mo", {"Too short.": "Fupi sana."})
    return root


def test_keep_pair_filter():
    assert keep_pair("Save the current document to disk.", "Enregistrer le document.")
    assert keep_pair("Is this a question with five words?", "Est-ce une question ?")
    for en, tgt in [("Too short.", "Trop court."), ("lower case start is not kept.", "x"),
                    ("No final punctuation in this string", "x"), ("Copied %s files to the folder.", "x"),
                    ("Use {name} as the default value.", "x"), ("Open the <b>bold</b> menu item.", "x"),
                    ("Escape the \\n character in strings.", "x"), ("Two lines\nin one message here.", "x"),
                    ("A valid English sentence is here.", "Une traduction avec %d nombre."),
                    ("A valid English sentence is here.", ""),
                    ("A valid English sentence is here.", "A valid English sentence is here."),
                    (" ".join(["Word"] * 61) + ".", "x")]:
        assert not keep_pair(en, tgt), en


def test_read_catalog_skips_plurals_and_header_and_strips_context(locale_root):
    entries = dict(read_catalog(locale_root / "fr/LC_MESSAGES/app.mo"))
    assert entries["Close all open windows now."] == "Fermer toutes les fenêtres ouvertes."
    assert "" not in entries
    assert not any("deleted from disk" in k for k in entries)
    assert entries[EN[0]] == FR[0]


def test_split_is_a_deterministic_hash_of_the_english():
    sentences = [f"Sentence number {i} of the test set." for i in range(2000)]
    splits = [split_of(s, 0.2, seed=0) for s in sentences]
    assert splits == [split_of(s, 0.2, seed=0) for s in sentences]
    assert 0.16 < splits.count("eval") / len(splits) < 0.24
    assert splits != [split_of(s, 0.2, seed=1) for s in sentences]
    assert all(split_of(s, 0.0) == "calib" for s in sentences[:50])


def test_extract_pairs_filters_dedups_and_records_provenance(locale_root):
    res = extract_pairs("fr", [("system", locale_root)], eval_fraction=0.25)
    recs = res["records"]
    by_en = {r["en"]: r for r in recs}
    assert set(by_en) == set(EN) | {"Close all open windows now."}  # the 6 + context + 2 from zz-other
    assert by_en[EN[0]]["fr"] == FR[0] and by_en[EN[0]]["domain"] == "app"  # first catalog wins
    assert by_en[EN[6]]["domain"] == "zz-other"
    assert by_en[EN[6]]["source"].endswith("fr/LC_MESSAGES/zz-other.mo") and by_en[EN[6]]["package"] == "system"
    assert len({r["fr"] for r in recs}) == len(recs)  # the duplicate translation was dropped
    assert all(r["split"] == split_of(r["en"], 0.25, 0) for r in recs)
    folder = locale_root / "fr/LC_MESSAGES"
    assert res["catalogs"] == [str(folder / "app.mo"), str(folder / "zz-other.mo")]


def test_alias_dirs_and_regional_variants(locale_root):
    assert extract_pairs("zh", [("system", locale_root)])["records"][0]["zh_CN"] == "将当前文档保存到磁盘。"
    assert extract_pairs("pt", [("s", locale_root)])["records"][0]["pt"].startswith("Guardar")
    assert extract_pairs("pt_BR", [("s", locale_root)])["records"][0]["pt_BR"].startswith("Salvar")
    with pytest.raises(ValueError, match="English is the source side"):
        extract_pairs("en", [("s", locale_root)])


def test_build_corpus_layout_and_manifest(locale_root, tmp_path):
    out = tmp_path / "corpus"
    manifest = build_gettext_corpus(["fr", "de"], out, eval_fraction=0.25, seed=3, locale_root=locale_root)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "pairs"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["format"] == "featprune-gettext-corpus" and "interface strings, not prose" in manifest["caveat"]
    fr = [json.loads(line) for line in (out / "pairs/fr.jsonl").read_text().splitlines()]
    de = [json.loads(line) for line in (out / "pairs/de.jsonl").read_text().splitlines()]
    assert set(fr[0]) == {"en", "fr", "split", "domain", "package", "source"}
    for lang, recs in (("fr", fr), ("de", de)):
        counts = manifest["languages"][lang]["counts"]
        assert counts["calib"] + counts["eval"] == counts["total"] == len(recs)
        assert counts["eval"] == sum(r["split"] == "eval" for r in recs)
    # The same English sentence is in the same split in every language.
    fr_split, de_split = {r["en"]: r["split"] for r in fr}, {r["en"]: r["split"] for r in de}
    common = set(fr_split) & set(de_split)
    assert common and all(fr_split[e] == de_split[e] for e in common)
    assert manifest["multiway"]["calib"] + manifest["multiway"]["eval"] == len(common)
    assert manifest["languages"]["de"]["domains"] == {"app": 8}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")]  # no temp dirs left


def test_build_is_deterministic_and_replaces_its_own_output(locale_root, tmp_path):
    out = tmp_path / "corpus"
    build_gettext_corpus(["fr"], out, locale_root=locale_root)
    first = (out / "pairs/fr.jsonl").read_bytes()
    build_gettext_corpus(["fr"], out, locale_root=locale_root)
    assert (out / "pairs/fr.jsonl").read_bytes() == first
    build_gettext_corpus(["de"], out, locale_root=locale_root)  # a rebuild replaces the whole dir
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["de.jsonl"]


def test_build_errors_write_nothing(locale_root, tmp_path):
    out = tmp_path / "corpus"
    with pytest.raises(ValueError, match=r"no gettext catalogs for Korean \(ko\)"):
        build_gettext_corpus(["fr", "ko"], out, locale_root=locale_root)
    with pytest.raises(ValueError, match=r"catalogs for Swahili \(sw\) but no pair passes the filter"):
        build_gettext_corpus(["sw"], out, locale_root=locale_root)
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        build_gettext_corpus(["xx"], out, locale_root=locale_root)
    with pytest.raises(ValueError, match="English is the source side"):
        build_gettext_corpus(["en"], out, locale_root=locale_root)
    with pytest.raises(ValueError, match="eval_fraction"):
        build_gettext_corpus(["fr"], out, eval_fraction=1.0, locale_root=locale_root)
    with pytest.raises(ValueError, match="no languages"):
        build_gettext_corpus([], out, locale_root=locale_root)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["locale"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        build_gettext_corpus(["fr"], foreign, locale_root=locale_root)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_extra_deb_from_a_file(locale_root, tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    pkg = tmp_path / "pkg"
    write_mo(pkg / "usr/lib/libreoffice/program/resource/fr/LC_MESSAGES/sw.mo",
             {"Insert a new table into the document.": "Insérer un nouveau tableau dans le document.",
              EN[0]: "Doublon."})
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: libreoffice-l10n-fr\nVersion: 1.0\nArchitecture: all\n"
                                        "Maintainer: t <t@example.org>\nDescription: test\n")
    deb = tmp_path / "libreoffice-l10n-fr_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    manifest = build_gettext_corpus(["fr"], tmp_path / "c", extra_debs=[str(deb)], locale_root=locale_root)
    assert manifest["languages"]["fr"]["packages"] == {"system": 9, "libreoffice-l10n-fr": 1}
    recs = [json.loads(x) for x in (tmp_path / "c/pairs/fr.jsonl").read_text().splitlines()]
    lo = [r for r in recs if r["package"] == "libreoffice-l10n-fr"]
    assert lo[0]["domain"] == "sw" and lo[0]["fr"].startswith("Insérer")  # system catalogs win on EN[0]


def test_extra_deb_download_failure_is_clear(locale_root, tmp_path):
    with pytest.raises(RuntimeError, match="could not download featprune-no-such-package|apt-get is not available"):
        build_gettext_corpus(["fr"], tmp_path / "c", extra_debs=["featprune-no-such-package"], locale_root=locale_root)
    assert not (tmp_path / "c").exists()
    with pytest.raises(FileNotFoundError, match="extra .deb not found"):
        build_gettext_corpus(["fr"], tmp_path / "c", extra_debs=[str(tmp_path / "missing.deb")],
                             locale_root=locale_root)
    assert gettext_corpus.libreoffice_package("zh_CN") == "libreoffice-l10n-zh-cn"
    assert gettext_corpus.libreoffice_package("pt-BR") == "libreoffice-l10n-pt-br"


def test_cli_prints_counts_and_is_registrable(locale_root, tmp_path, capsys):
    out = tmp_path / "c"
    rc = cli.main(["data", "gettext", "--langs", "fr,de", "--out", str(out), "--eval-fraction", "0.25",
                        "--seed", "3", "--locale-root", str(locale_root)])
    assert rc == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["languages"]["fr"]["counts"]
    assert "fr        French" in text and f"{c['calib']}" in text and "(all)" in text
    assert cli.main(["data", "gettext", "--langs", "xx", "--out", str(out)]) == 2
    assert "unknown language code 'xx'" in capsys.readouterr().err

    import argparse
    parser = argparse.ArgumentParser(prog="featprune")
    data_cli.add_parser(parser.add_subparsers(dest="command"), [])
    args = parser.parse_args(["data", "gettext", "--langs", "fr", "--out", "d", "--extra-deb"])
    assert args.command == "data" and args.extra_deb and args.func is not None


def test_system_catalogs_when_present():
    if not list(Path(gettext_corpus.SYSTEM_LOCALE_ROOT).glob("fr/LC_MESSAGES/*.mo")):
        pytest.skip("no French gettext catalogs on this system")
    recs = extract_pairs("fr")["records"]
    assert len(recs) > 100 and all(keep_pair(r["en"], r["fr"]) for r in recs)
