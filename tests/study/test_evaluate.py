"""Evaluation: the scorer against full logits, each task end to end on a tiny random model, the CLI
(eval, eval --compare, compare), error messages, and a SmolLM2 smoke test."""

import json
import math

import pytest
import torch
from tiny_models import build_tiny_model

from featprune_ext.cli import main as cli_main
from featprune_ext.study import runner, tasks
from featprune_ext.study.scorer import Scorer
from featprune_ext.study.tasks import EvalError

EN = ["Open the file.", "Save your changes.", "Close the window now.", "The printer is out of paper.",
      "Delete this item?", "Connection refused by the server.", "Select a folder first.", "Print the page.",
      "Restart the computer.", "The disk is full.", "Check your password.", "Copy the text.",
      "Move the file to the trash.", "Show hidden files.", "Rename the folder.", "Undo the last action."]
FR = ["Ouvrir le fichier.", "Enregistrez vos modifications.", "Fermez la fenêtre maintenant.",
      "L'imprimante n'a plus de papier.", "Supprimer cet élément ?", "Connexion refusée par le serveur.",
      "Sélectionnez d'abord un dossier.", "Imprimer la page.", "Redémarrez l'ordinateur.", "Le disque est plein.",
      "Vérifiez votre mot de passe.", "Copier le texte.", "Mettre le fichier à la corbeille.",
      "Afficher les fichiers cachés.", "Renommer le dossier.", "Annuler la dernière action."]
DE = ["Datei öffnen.", "Speichern Sie Ihre Änderungen.", "Fenster jetzt schließen.", "Der Drucker hat kein Papier.",
      "Dieses Element löschen?", "Verbindung vom Server abgelehnt.", "Wählen Sie zuerst einen Ordner.",
      "Seite drucken.", "Computer neu starten.", "Die Festplatte ist voll.", "Überprüfen Sie Ihr Passwort.",
      "Text kopieren.", "Datei in den Papierkorb verschieben.", "Versteckte Dateien anzeigen.", "Ordner umbenennen.",
      "Letzte Aktion rückgängig machen."]


def write_corpus(path):
    """JSONL parallel corpus: 8 calibration rows, 8 evaluation rows (corpora.py reads the split key)."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, (en, fr, de) in enumerate(zip(EN, FR, DE)):
            fh.write(json.dumps({"en": en, "fr": fr, "de": de, "split": "eval" if i % 2 else "calib"},
                                ensure_ascii=False) + "\n")
    return path


def write_task_files(root):
    xnli = root / "xnli"
    xnli.mkdir()
    rows = [("A man is sleeping.", "A person rests.", 0), ("The dog runs.", "The cat sleeps.", 1),
            ("It is raining.", "The weather is dry.", 2), ("She reads a book.", "She is reading.", 0)]
    for lang in ("en", "fr"):
        with open(xnli / f"{lang}.jsonl", "w", encoding="utf-8") as fh:
            for p, h, y in rows:  # same items in both files (line-aligned, like XNLI)
                fh.write(json.dumps({"premise": p, "hypothesis": h, "label": y}) + "\n")
    marc = root / "marc"
    marc.mkdir()
    with open(marc / "en.jsonl", "w", encoding="utf-8") as fh:
        for i, (body, stars) in enumerate([("Great product, works well.", 5), ("Broke after a day.", 1),
                                           ("It is fine.", 3), ("Terrible, do not buy.", 2), ("Love it.", 4)]):
            fh.write(json.dumps({"review_id": f"r{i}", "review_body": body, "review_title": "t",
                                "stars": stars}) + "\n")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = build_tiny_model("llama", root / "llama")
    other = build_tiny_model("llama", root / "llama2", seed=1, tokenizer_dir=root / "llama")
    corpus = write_corpus(root / "corpus.jsonl")
    write_task_files(root)
    scorer = Scorer(model, progress=False, threads=1)
    return {"root": root, "model": model, "other": other, "corpus": corpus, "scorer": scorer}


# ------------------------------------------------------------------------------------ the scorer
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_scorer_matches_full_logits(tmp_path, family):
    model_dir = build_tiny_model(family, tmp_path / family)
    sc = Scorer(model_dir, progress=False, batch_tokens=24, head_chunk=5)  # several batches and head flushes
    assert sc.fast_head
    reqs = [("English: Open the file.\nFrench:", " Ouvrir le fichier."), ("", "The quick brown fox."),
            ("def add(a, b):", "\n    return a + b"), ("Short.", " x")]
    got = sc.loglikelihood(reqs)
    for (ctx, cont), r in zip(reqs, got):
        e = sc.encode(ctx, cont)
        ids = torch.tensor([e.ctx + e.cont])
        with torch.no_grad():
            logp = torch.log_softmax(sc.model(input_ids=ids).logits.float()[0], dim=-1)
        want = sum(float(logp[len(e.ctx) - 1 + j, t]) for j, t in enumerate(e.cont))
        assert r["tokens"] == len(e.cont)
        assert r["logprob"] == pytest.approx(want, abs=1e-3)


def test_loglikelihood_picks_the_right_label(tmp_path):
    """A tiny model trained to say 'The sky is blue.' must rank ' blue' first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = build_tiny_model("llama", tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    texts = ["The sky is blue.", "Grass is green.", "The sun is yellow."]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(tmp_path / "trained")
    tok.save_pretrained(tmp_path / "trained")
    sc = Scorer(tmp_path / "trained", progress=False)
    for ctx, right in (("The sky is", " blue."), ("Grass is", " green."), ("The sun is", " yellow.")):
        cands = [" blue.", " green.", " yellow."]
        scores = [r["logprob"] for r in sc.loglikelihood([(ctx, c) for c in cands])]
        assert cands[max(range(3), key=scores.__getitem__)] == right


# ------------------------------------------------------------------------------------- the tasks
def assert_choice_identities(res):
    """What a choice task's numbers must satisfy, whatever the model: per item, the prediction is the
    best score and `correct` says whether it is the gold; per language, acc = correct / n."""
    items = res["items"]
    assert res["n"] == len(items) > 0
    for it in items:
        best = max(range(len(it["scores"])), key=it["scores"].__getitem__)
        best_alt = max(range(len(it["scores_alt"])), key=it["scores_alt"].__getitem__)
        assert it["pred"] == best
        assert it["correct"] is (it["pred"] == it["gold"])
        assert it["correct_alt"] is (best_alt == it["gold"])
        assert it["ranking"][0] == it["candidate_ids"][it["pred"]] and sorted(it["ranking"]) == sorted(
            it["candidate_ids"])
    assert res["correct"] == sum(it["correct"] for it in items)
    assert res["acc"] == res["correct"] / res["n"]
    assert res["acc_alt"] == pytest.approx(sum(it["correct_alt"] for it in items) / res["n"])
    assert res["acc_ci"][0] <= res["acc"] <= res["acc_ci"][1]


def test_ppl_task(env):
    r = runner.evaluate(env["model"], "ppl", ["fr", "en"], env["corpus"], scorer=env["scorer"], n_boot=50)
    fr = r["languages"]["fr"]
    assert fr["n"] == 8 and fr["tokens"] == sum(it["tokens"] for it in fr["items"])
    nll = sum(it["nll"] for it in fr["items"])
    assert fr["ppl"] == pytest.approx(math.exp(nll / fr["tokens"]), rel=1e-6)
    assert fr["ppl_ci"][0] <= fr["ppl"] <= fr["ppl_ci"][1]
    assert r["languages"]["en"]["n"] == 8  # English: the English side of the evaluation split
    assert r["consistency"] is None


def test_translation_choice_task_and_consistency(env):
    r = runner.evaluate(env["model"], "translation-choice", ["fr", "de"], env["corpus"], scorer=env["scorer"],
                        n_boot=50, limit=6)
    fr = r["languages"]["fr"]
    assert fr["n"] == 6 and fr["chance"] == 0.25
    assert 0 <= fr["acc"] <= 1 and fr["acc_ci"][0] <= fr["acc"] <= fr["acc_ci"][1]
    assert fr["correct"] == sum(it["correct"] for it in fr["items"])
    for it in fr["items"]:
        assert len(it["scores"]) == 4 and len(set(it["candidate_ids"])) == 4 and 0 <= it["gold"] < 4
        assert it["pred"] == max(range(4), key=it["scores"].__getitem__)
        assert it["candidate_ids"][it["gold"]] == it["id"]  # the gold candidate is the item's own sentence
        assert it["id"] in {tasks._item_id(EN[i]) for i in range(1, len(EN), 2)}  # eval rows only (odd rows)
    from featprune_ext.data.languages import resolve

    for it in tasks.translation_choice_items(env["corpus"], resolve("fr"), 6, 0):
        assert it["candidates"][it["gold"]] == FR[EN.index(it["src"])]  # the gold is the real translation
        assert set(it["candidates"]) <= {FR[i] for i in range(1, len(FR), 2)}
    for lang in ("fr", "de"):
        assert_choice_identities(r["languages"][lang])
    # fr and de have the same English pool here, so items and candidate sets are parallel.
    cons = r["consistency"]
    assert cons["reference"] == "fr" and cons["languages"]["de"]["n"] == 6
    assert 0 <= cons["languages"]["de"]["rankc"] <= 1
    # deterministic: the same call gives the same per-item scores
    again = runner.evaluate(env["model"], "translation-choice", ["fr"], env["corpus"], scorer=env["scorer"], n_boot=50,
                            limit=6)
    assert again["languages"]["fr"]["items"] == fr["items"]


def test_translation_choice_parallel_pool(env, tmp_path):
    # de lacks two of the evaluation sentences: with parallel=True neither language uses them.
    corpus = tmp_path / "c.jsonl"
    rows = [json.loads(line) for line in env["corpus"].read_text(encoding="utf-8").splitlines()]
    for r in rows[1:4:2]:
        del r["de"]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    r = runner.evaluate(env["model"], "translation-choice", ["fr", "de"], corpus, scorer=env["scorer"], n_boot=20,
                        parallel=True)
    assert r["settings"]["parallel_pool"] == 6
    assert r["languages"]["fr"]["n"] == r["languages"]["de"]["n"] == 6
    assert r["consistency"]["languages"]["de"]["n"] == 6
    with pytest.raises(EvalError, match="parallel applies to translation-choice"):
        runner.evaluate(env["model"], "ppl", ["fr"], corpus, scorer=env["scorer"], parallel=True)


def test_xnli_marc_translate_tasks(env):
    root = env["root"]
    x = runner.evaluate(env["model"], "xnli", ["en", "fr"], root, scorer=env["scorer"], n_boot=50)
    assert x["languages"]["en"]["n"] == 4 and x["languages"]["fr"]["chance"] == pytest.approx(1 / 3)
    assert x["consistency"]["reference"] == "en" and x["consistency"]["languages"]["fr"]["n"] == 4
    assert x["languages"]["en"]["items"][0]["candidate_ids"] == ["entailment", "neutral", "contradiction"]
    h = runner.evaluate(env["model"], "xnli", ["fr"], root, scorer=env["scorer"], n_boot=50, template="harness")
    assert h["languages"]["fr"]["n"] == 4
    m = runner.evaluate(env["model"], "marc", ["en"], root, scorer=env["scorer"], n_boot=50)
    assert m["languages"]["en"]["n"] == 4  # the 3-star review is dropped
    assert sorted(it["gold"] for it in m["languages"]["en"]["items"]) == [0, 0, 1, 1]
    for res in (x["languages"]["en"], x["languages"]["fr"], h["languages"]["fr"], m["languages"]["en"]):
        assert_choice_identities(res)
    # gold labels: XNLI's 0/1/2 = entailment/neutral/contradiction; MARC's 4-5 stars positive, 1-2 negative
    assert sorted(it["gold"] for it in x["languages"]["en"]["items"]) == [0, 0, 1, 2]
    t = runner.evaluate(env["model"], "translate", ["fr"], env["corpus"], scorer=env["scorer"], n_boot=20, shots=2,
                        max_new_tokens=6, limit=3)
    fr = t["languages"]["fr"]
    assert fr["n"] == 3 and fr["shots"] == 2 and 0 <= fr["chrf"] <= 100 and "bleu_ci" in fr
    assert all(isinstance(it["hyp"], str) for it in fr["items"])


def test_xnli_prompts_follow_the_paper(env):
    from featprune_ext.data.languages import resolve

    paper = tasks.xnli_items(env["root"], resolve("fr"), None, 0, "paper")
    it = next(i for i in paper if i["gold"] == 0 and i["context"].startswith("A man"))
    assert it["context"] == "A man is sleeping. , right?"
    assert it["candidates"] == [" Yes , A person rests.", " Also , A person rests.", " No , A person rests."]
    harness = tasks.xnli_items(env["root"], resolve("fr"), None, 0, "harness")
    it = next(i for i in harness if i["context"].startswith("A man"))
    assert it["context"] == "A man is sleeping., correct?" and it["candidates"][0] == " Oui, A person rests."
    marc = tasks.marc_items(env["root"], resolve("en"), None, 0)
    assert {i["context"] for i in marc} >= {"Love it. It is"} and marc[0]["candidates"] == [" negative", " positive"]


# ----------------------------------------------------------------------------------------- CLI
def test_cli_eval_compare(env, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["--task", "translation-choice", "--langs", "fr", "--data", str(env["corpus"]), "--limit", "5",
              "--bootstrap", "50", "--no-progress", "--threads", "1"]
    assert cli_main(["eval", str(env["model"]), *common, "--json", str(a)]) == 0
    out = capsys.readouterr().out
    assert "| lang |" in out and "acc %" in out
    assert cli_main(["eval", str(env["other"]), *common, "--json", str(b)]) == 0
    capsys.readouterr()
    assert cli_main(["eval", "--compare", str(a), str(b), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "p (paired bootstrap)" in out and "| fr " in out
    res = json.loads(a.read_text())
    assert res["format"] == "featprune-eval" and len(res["languages"]["fr"]["items"]) == 5
    outdir = tmp_path / "cmp"
    assert cli_main(["compare", str(a), str(b), "--task", "translation-choice", "--out", str(outdir),
                     "--bootstrap", "50"]) == 0
    assert (outdir / "compare.translation-choice.png").stat().st_size > 1000
    summary = json.loads((outdir / "compare.translation-choice.json").read_text())
    assert summary["paired_bootstrap_vs_baseline"]["b"]["languages"]["fr"]["n"] == 5


def test_cli_compare_evaluates_model_dirs(env, tmp_path, capsys):
    outdir = tmp_path / "cmp"
    assert cli_main(["compare", str(env["model"]), str(env["other"]), "--names", "dense,other", "--task", "ppl",
                     "--langs", "fr", "--data", str(env["corpus"]), "--limit", "4", "--out", str(outdir),
                     "--bootstrap", "30", "--no-progress"]) == 0
    assert "| dense " in capsys.readouterr().out
    assert (outdir / "dense.ppl.json").is_file() and (outdir / "compare.ppl.md").is_file()


def test_errors_are_clear(env, tmp_path, capsys):
    with pytest.raises(EvalError, match="unknown task 'nope'.*ppl, translation-choice"):
        runner.evaluate(env["model"], "nope", ["fr"], env["corpus"], scorer=env["scorer"])
    with pytest.raises(EvalError, match="unknown language code 'xx'.*known.*fr"):
        runner.evaluate(env["model"], "ppl", ["xx"], env["corpus"], scorer=env["scorer"])
    with pytest.raises(EvalError, match="ppl needs --data"):
        runner.evaluate(env["model"], "ppl", ["fr"], None, scorer=env["scorer"])
    with pytest.raises(EvalError, match="data path does not exist"):
        runner.evaluate(env["model"], "ppl", ["fr"], tmp_path / "missing", scorer=env["scorer"])
    with pytest.raises(EvalError, match="no German file.*JSONL files there: en.jsonl"):
        runner.evaluate(env["model"], "marc", ["de"], env["root"] / "marc", scorer=env["scorer"])
    with pytest.raises(EvalError, match="English is the source side"):
        runner.evaluate(env["model"], "translation-choice", ["en"], env["corpus"], scorer=env["scorer"])
    with pytest.raises(EvalError, match="not a model directory"):
        Scorer(tmp_path)
    assert cli_main(["eval", str(env["model"]), "--langs", "fr"]) == 2
    assert "--task is required" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli_main(["eval", "--compare", str(bad), str(bad)]) == 2
    assert "not a featprune eval JSON" in capsys.readouterr().err


# --------------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_smollm2_smoke(tmp_path):
    """The real SmolLM2 135M (Llama) through translation-choice and ppl, on a few items."""
    from featprune_ext.data import zoo

    try:
        model = zoo.smollm2_dir()
    except zoo.ModelPackageMissing as exc:
        pytest.skip(str(exc))
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    sc = Scorer(model, progress=False, threads=1)
    assert sc.fast_head
    r = runner.evaluate(model, "translation-choice", ["fr"], corpus, limit=4, n_boot=50, scorer=sc)
    assert r["languages"]["fr"]["n"] == 4
    p = runner.evaluate(model, "ppl", ["en"], corpus, limit=4, n_boot=50, scorer=sc)
    assert 1 < p["languages"]["en"]["ppl"] < 10_000  # a real model: far below the 49k-token vocabulary
